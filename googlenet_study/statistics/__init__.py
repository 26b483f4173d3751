"""The statistics both the report and the race stand on (plain numbers and DataFrames in, numbers out; no
MLflow, no matplotlib): time to target as censored data (survival), small-sample robust statistics and the
bootstrap (robust), performance profiles (profiles) and the ranking no dominated configuration can reorder
(ranking). The report (report/) and the racing decision (sweep/race_decision.py) import these; nothing here imports them."""
