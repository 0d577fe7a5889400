"""Tables as they come (issue 23): ids, a label column, categories and missing cells, from a CSV
through `vae train` and `vae export` to scores that every surface answers alike."""

import json
import os
import signal

import httpx
import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import N, run_cli, run_cli_here, transactions


def test_train_decides_every_column_in_one_line_per_kind(mixed, tmp_path):
    transactions(300, 4).to_csv(tmp_path / "tx.csv", index=False)
    refused = run_cli_here("train", "--data", str(tmp_path / "tx.csv"), "--out",
                           str(tmp_path / "run"), "--epochs", "1", "--quiet")
    lines = refused.stderr.splitlines()
    assert any(line.startswith("vae train: numeric (2): amount, hour") for line in lines)
    assert any(line.startswith("vae train: categorical (2): merchant (4 levels), country (2 "
                               "levels)") for line in lines)
    ignored = next(line for line in lines if line.startswith("vae train: ignored (2)"))
    assert "txn_id (a distinct value in most rows" in ignored and "timestamp (a timestamp)" \
        in ignored
    label = next(line for line in lines if "label-like" in line)
    assert "is_fraud" in label and "--label-column is_fraud" in label
    assert any("missing cells:" in line for line in lines)
    schema = mixed["runtime"].schema  # trained with --label-column is_fraud
    assert schema.names == ["amount", "merchant", "hour", "country"]
    assert set(schema.ignored) == {"txn_id", "timestamp", "is_fraud"}  # is_fraud passes through


def test_flags_override_the_decisions(tmp_path):
    table = transactions(200, 1)
    table.to_csv(tmp_path / "tx.csv", index=False)
    from serving.tables.infer import infer_schema
    from serving.tables.read import read_arrow
    arrow = read_arrow(tmp_path / "tx.csv", ".csv")
    schema, _ = infer_schema(arrow, numeric=["is_fraud"], categorical=["hour"],
                             ignore=["country"])
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds["is_fraud"] == "numeric" and kinds["hour"] == "categorical"
    assert "country" in schema.ignored
    refused = run_cli_here("train", "--data", str(tmp_path / "tx.csv"), "--out",
                           str(tmp_path / "run"), "--categorical", "nope")
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0 and "--categorical 'nope'" in refused.stderr


def test_an_unseen_level_is_scored_as_the_rare_levels_and_raises_the_score(mixed):
    runtime = mixed["runtime"]
    usual = {"amount": 40.0, "merchant": "grocery", "hour": 12.0, "country": "FR"}
    rows = runtime.schema.from_records([usual, {**usual, "merchant": "spaceport"}])
    scored = runtime.score(rows, runtime.noise(0, 16), explain=True)
    assert scored.score[1] > scored.score[0] + 1.0
    merchant = runtime.schema.names.index("merchant")
    rise = scored.feature_nll[1] - scored.feature_nll[0]
    assert rise.argmax() == merchant and rise[merchant] > 1.0  # explain names the column


def test_missing_cells_leave_the_likelihood_and_each_answer_counts_them(mixed):
    runtime = mixed["runtime"]
    rows = runtime.schema.from_records([
        {"amount": 40.0, "merchant": "grocery", "hour": 12.0, "country": "FR"},
        {"amount": 40.0, "merchant": None, "country": "FR"}])
    scored = runtime.score(rows, runtime.noise(0, 16), explain=True)
    assert scored.observed.tolist() == [4, 2]
    assert scored.feature_nll[1, 1] == 0.0 and scored.feature_nll[1, 2] == 0.0
    with pytest.raises(ValueError, match=r"records\[0\] has no observed cell"):
        runtime.check(runtime.schema.from_records([{"merchant": None}]), "records")


def test_rows_with_missing_cells_score_alike_through_records_files_http_and_ray(mixed, tmp_path):
    runtime, bundle = mixed["runtime"], mixed["bundle"]
    table = transactions(300, 2)
    table.to_csv(tmp_path / "new.csv", index=False)
    pa_table = pa.Table.from_pandas(table.astype({"merchant": str}).replace("None", None),
                                    preserve_index=False)
    import pyarrow.parquet as pq
    pq.write_table(pa_table, tmp_path / "new.parquet")
    records = json.loads(table.to_json(orient="records"))
    expected = runtime.score(runtime.schema.from_records(records), runtime.noise(5, 16))

    for name in ("new.csv", "new.parquet"):
        out = tmp_path / f"scores-{name}.parquet"
        done = run_cli("score", str(tmp_path / name), "--model", str(bundle), "--out", str(out),
                       "--seed", "5", "--columns", "txn_id", "--quiet")
        assert done.returncode == 0, done.stderr
        scored = pq.read_table(out)
        assert scored["score"].to_pylist() == expected.score.tolist(), name
        assert scored["observed"].to_pylist() == expected.observed.tolist()
        assert scored["txn_id"].to_pylist() == table["txn_id"].tolist()

    from tests.http.test_serve import start_server
    home = tmp_path / "home"
    served = start_server(bundle, home, tmp_path / "serve.log")
    try:
        answer = httpx.post(f"{served['url']}/anomaly_score",
                            json={"records": records, "n_samples": 16, "seed": 5}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["score"] == expected.score.tolist()
        assert answer.json()["observed"] == expected.observed.tolist()
        with open(tmp_path / "new.csv", "rb") as f:
            uploaded = httpx.post(f"{served['url']}/anomaly_score_file",
                                  files={"file": ("new.csv", f, "text/csv")},
                                  data={"n_samples": "16", "seed": "5"}, timeout=60)
        assert uploaded.status_code == 200, uploaded.text
        lines = uploaded.text.splitlines()
        assert "txn_id" in lines[0] and "observed" in lines[0]  # ignored columns pass through
        wrong = httpx.post(f"{served['url']}/anomaly_score",
                           json={"records": [{"amount": "lots"}]}, timeout=60)
        assert wrong.status_code == 400
        assert "records[0]['amount'] is 'lots'; expected a number or null" in wrong.text
        metadata = httpx.get(f"{served['url']}/metadata", timeout=60).json()
        assert [c["name"] for c in metadata["schema"]["columns"]] == runtime.schema.names
        assert metadata["calibration"]["by_observed"][0]["observed"] == 4
        sampled = httpx.post(f"{served['url']}/sample", json={"n": 3, "seed": 1},
                             timeout=60).json()
        assert sampled["records"][0]["merchant"] in runtime.schema.columns[1].levels
        rebuilt = httpx.post(f"{served['url']}/reconstruct",
                             json={"records": records[:2], "seed": 1}, timeout=60).json()
        assert set(rebuilt["probability"][0]) == {"merchant", "country"}
        imputed = [httpx.post(f"{served['url']}/impute",
                              json={"records": records[:20], "draws": 2, "seed": 9},
                              timeout=60).json() for _ in range(2)]
        assert imputed[0] == imputed[1] and len(imputed[0]["records"]) == 2
    finally:
        os.killpg(served["process"].pid, signal.SIGTERM)
        served["process"].wait(timeout=30)


def test_impute_fills_only_missing_cells_and_replays_from_its_seed(mixed):
    runtime = mixed["runtime"]
    records = [{"amount": None, "merchant": "travel", "hour": 12.0, "country": "FR"},
               {"amount": 8.0, "merchant": None, "hour": None, "country": "DE"}]
    rows = runtime.schema.from_records(records)
    filled = runtime.impute(rows, 64, seed=1)
    assert not np.isnan(filled).any()
    assert filled[0, 1:].tolist() == rows[0, 1:].tolist()  # observed cells as given
    assert filled[0, 0] > 100.0  # a travel amount (~400), not the overall mean (~75)
    assert runtime.schema.to_records(filled)[1]["merchant"] in ("grocery", "fuel", "travel", "cafe")
    draws = runtime.impute(rows, 16, seed=1, draws=3)
    assert draws.shape == (3, 2, 4)
    np.testing.assert_array_equal(draws, runtime.impute(rows, 16, seed=1, draws=3))
    assert not np.array_equal(draws, runtime.impute(rows, 16, seed=2, draws=3))


def test_calibration_holds_when_cells_are_blanked(mixed):
    """Normal rows never seen in training, blanked at random: the flag rate stays within a point
    and a half of the nominal 5% at every blanking rate (the threshold comes from 1,200
    validation rows, the rate from 5,880: their standard errors add up to 0.7 points)."""
    runtime = mixed["runtime"]
    table = transactions(N, 3)
    normal = table[table["is_fraud"] == 0].drop(columns=["is_fraud"])
    records = json.loads(normal.to_json(orient="records"))
    x = runtime.schema.from_records(records)
    rng = np.random.default_rng(0)
    for share in (0.0, 0.1, 0.3, 0.5):
        blanked = x.copy()
        blanked[rng.random(x.shape) < share] = np.nan
        blanked = blanked[~np.isnan(blanked).all(axis=1)]
        rate = runtime.score(blanked, runtime.noise(0, 16)).is_anomaly.mean()
        assert abs(rate - 0.05) <= 0.015, (share, rate)


def test_the_open_inference_protocol_takes_categories_as_bytes(mixed, tmp_path):
    """tritonclient, unchanged: one tensor per column, BYTES for a categorical one, NaN and ""
    for missing cells; the scores equal the records' bit for bit."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    runtime = mixed["runtime"]
    table = transactions(40, 5)
    records = json.loads(table.to_json(orient="records"))
    expected = runtime.score(runtime.schema.from_records(records), runtime.noise(3, 16))
    from tests.http.test_serve import start_server
    served = start_server(mixed["bundle"], tmp_path / "home", tmp_path / "serve.log")
    try:
        client = triton.InferenceServerClient(served["url"].removeprefix("http://"))
        inputs = client.get_model_metadata("vae")["inputs"]
        assert inputs == [{"name": "amount", "datatype": "FP32", "shape": [-1]},
                          {"name": "merchant", "datatype": "BYTES", "shape": [-1]},
                          {"name": "hour", "datatype": "FP32", "shape": [-1]},
                          {"name": "country", "datatype": "BYTES", "shape": [-1]}]
        tensors = []
        for spec in inputs:
            column = table[spec["name"]]
            if spec["datatype"] == "FP32":
                values = np.asarray(column.astype(float), np.float32)  # None -> NaN
            else:
                values = np.asarray(["" if v is None else v for v in column], dtype=object)
            tensor = triton.InferInput(spec["name"], [len(values)], spec["datatype"])
            tensor.set_data_from_numpy(values, binary_data=False)
            tensors.append(tensor)
        result = client.infer("vae", tensors, parameters={"n_samples": 16, "seed": 3},
                              outputs=[triton.InferRequestedOutput("score", binary_data=False)])
        np.testing.assert_array_equal(result.as_numpy("score"), expected.score)
        wrong = triton.InferInput("merchant", [2], "FP32")
        wrong.set_data_from_numpy(np.zeros(2, np.float32), binary_data=False)
        with pytest.raises(InferenceServerException, match="input 'merchant' has datatype "
                                                           "'FP32'; expected BYTES"):
            client.infer("vae", [wrong])
    finally:
        os.killpg(served["process"].pid, signal.SIGTERM)
        served["process"].wait(timeout=30)


def test_evaluate_reads_the_held_out_rows_through_the_schema(mixed):
    done = run_cli("evaluate", "--model", str(mixed["bundle"]), "--data",
                   str(mixed["dir"] / "run" / "evaluation.parquet"), "--label-column",
                   "is_fraud", "--out", str(mixed["dir"] / "evaluation"))
    assert done.returncode == 0, done.stderr
    assert "AUROC" in done.stdout or "auroc" in done.stdout.lower()


def test_vae_impute_writes_filled_rows_and_draws(mixed, tmp_path):
    transactions(100, 8).to_csv(tmp_path / "new.csv", index=False)
    done = run_cli("impute", str(tmp_path / "new.csv"), "--model", str(mixed["bundle"]),
                   "--out", str(tmp_path / "filled.csv"), "--draws", "2", "--seed", "4")
    assert done.returncode == 0, done.stderr
    import pyarrow.csv as csv
    filled = csv.read_csv(tmp_path / "filled.csv")
    assert filled.num_rows == 200 and filled["draw"].to_pylist()[:2] == [0, 0]
    assert filled["amount"].null_count == 0 and filled["merchant"].null_count == 0
    assert "txn_id" in filled.column_names  # ignored columns pass through
    again = run_cli("impute", str(tmp_path / "new.csv"), "--model", str(mixed["bundle"]),
                    "--out", str(tmp_path / "again.csv"), "--draws", "2", "--seed", "4")
    assert again.returncode == 0
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "filled.csv").read_bytes()
