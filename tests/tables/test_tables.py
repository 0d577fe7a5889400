"""Data loading: embedded sets, files in each format, and every bad file's one-line error."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.core.rows import InputError
from serving.tables.read import read_table
from training.data import fit_normalization, load_dataset, split_rows


def test_embedded_data_sets():
    digits = load_dataset("digits")
    assert digits.x.shape == (1797, 64) and digits.x.dtype == np.float32
    assert digits.feature_names[:2] == ["pixel_0_0", "pixel_0_1"] and digits.image_shape == (8, 8)
    cancer = load_dataset("breast-cancer")
    assert cancer.x.shape == (569, 30) and cancer.feature_names[0] == "mean radius"


@pytest.fixture
def rows():
    return np.arange(12, dtype=np.float32).reshape(4, 3) / 4


def test_each_file_format_reads_the_same_rows(tmp_path, rows):
    np.save(tmp_path / "a.npy", rows)
    (tmp_path / "a.csv").write_text("u,v,w\n" + "\n".join(",".join(map(str, r)) for r in rows))
    pq.write_table(pa.table({"u": rows[:, 0], "v": rows[:, 1], "w": rows[:, 2]}),
                   tmp_path / "a.parquet")
    for name, names in [("a.npy", None), ("a.csv", ["u", "v", "w"]),
                        ("a.parquet", ["u", "v", "w"])]:
        table = read_table(tmp_path / name)
        np.testing.assert_array_equal(table.x, rows)
        assert table.feature_names == names
        assert load_dataset(str(tmp_path / name)).x.shape == (4, 3)


BAD_FILES = [
    ("text.csv", "a,b\n1,x\n2,y\n", r"column 'b' is string, not numeric; expected numbers"),
    ("nan.csv", "a,b\n1,2\nnan,3\n", r"column 'a' has an empty or NaN value at row 1"),
    ("hole.csv", "a,b\n1,2\n,3\n", r"column 'a' has an empty or NaN value at row 1"),
    ("inf.csv", "a,b\n1,inf\n", r"row 0, column 'b' is infinite; expected finite numbers"),
    ("empty.csv", "", r"is empty; expected a header row and numeric rows"),
    ("header.csv", "a,b\n", r"has no rows; expected at least one row"),
    ("ragged.csv", "a,b\n1,2\n3\n", r"could not be read as \.csv"),
    ("table.txt", "1 2\n", r"has extension '\.txt'; expected one of \.csv, \.parquet, \.npy"),
]


@pytest.mark.parametrize("name,content,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_text_files_give_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message) as error:
        read_table(tmp_path / name)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("array,message", [
    (np.arange(5.0), r"has shape \[5\]; expected a 2-D array"),
    (np.zeros((2, 2, 2)), r"has shape \[2, 2, 2\]; expected a 2-D array"),
    (np.array([["a", "b"]]), r"holds <U1 values; expected a numeric array"),
    (np.zeros((0, 3)), r"has no rows"),
    (np.array([[1.0, np.nan]]), r"row 0, column 1 is NaN"),
])
def test_bad_npy_files(tmp_path, array, message):
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(InputError, match=message):
        read_table(tmp_path / "a.npy")


def test_missing_and_misnamed_sources(tmp_path):
    with pytest.raises(InputError, match=r"does not exist; expected a \.csv file"):
        read_table(tmp_path / "none.csv")
    with pytest.raises(InputError, match=r"'digit' is neither an embedded data set nor a file"):
        load_dataset("digit")
    pq.write_table(pa.table({"a": ["x"]}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match=r"column 'a' is string, not numeric"):
        read_table(tmp_path / "s.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"could not be read as \.parquet"):
        read_table(tmp_path / "broken.parquet")


def test_split_and_normalization_use_training_rows_only():
    train, val = split_rows(100, 0.2, seed=3)
    assert len(train) == 80 and len(val) == 20 and not set(train) & set(val)
    assert np.array_equal(split_rows(100, 0.2, seed=3)[1], val)
    x = np.array([[0.0, 1.0], [0.0, 3.0], [0.0, 100.0]], dtype=np.float32)
    mean, std = fit_normalization(x[:2])  # the third row is "validation"
    np.testing.assert_allclose(mean, [0.0, 2.0])
    np.testing.assert_allclose(std, [1.0, 1.0])  # a constant feature keeps std 1



def test_an_empty_npy_and_a_doubled_column_are_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from serving.tables.sources import open_source

    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.npy is not a readable .npy array"):
        open_source(tmp_path / "empty.npy", ["a", "b"])
    pq.write_table(pa.Table.from_arrays([pa.array([1.0])] * 3, names=["a", "b", "a"]),
                   tmp_path / "twice.parquet")
    with pytest.raises(InputError, match=r"has 1 feature columns more than once \('a'\)"):
        open_source(tmp_path / "twice.parquet", ["a", "b"])
