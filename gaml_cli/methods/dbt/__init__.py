"""Diffusion Boosted Trees (DBT; Han & Zhou 2024, arXiv 2406.01813) on CARD (Han et al. 2022).

forward.py  CARD's forward process, posterior and reverse step (equations cited there)
model.py    DBTRegressor / DBTClassifier: the scikit-learn-style API the CLI uses
tables.py   reading CSV / Parquet / JSONL tables and encoding features (categoricals, NaN)
io.py       the .dbt container (a zip of LightGBM text models + gaml.json; no pickle)
metrics.py  RMSE, NLL, QICE, PICP (as CARD defines them), CRPS; accuracy under deferral
data.py     the offline data sets of the recipes and the benchmark
"""
