-- Run once by the postgres image on an empty data volume: MLflow's backend store lives in
-- its own database beside Dagster's (both define a `runs` table).
CREATE DATABASE mlflow;
