"""The embedding cache and embedding users' images through it."""
import os

import numpy as np
import pytest

from data_prep.dataset import User, load_dataset
from profiler.embeddings import EmbeddedData, EmbeddingStore, content_digest, embed_users
from tests.helpers import TinyEncoder, make_dataset, save, solid, truncated_jpeg


def test_store_round_trip_and_counts(tmp_path):
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        v = np.arange(4, dtype=np.float32)
        store.put("enc@1", {b"a": v, b"bad": "corrupt image: x"})
        got = store.get("enc@1", [b"a", b"bad", b"zzz", b"a"])
        assert np.array_equal(got[b"a"], v) and got[b"bad"] == "corrupt image: x" and b"zzz" not in got
        assert (store.hits, store.misses) == (2, 1)
        assert store.get("enc@2", [b"a"]) == {}  # another encoder's entries are not shared
        assert store.count() == 2 and store.count("enc@1") == 2


def test_a_cached_vector_that_is_not_the_encoders_is_refused(tmp_path):
    """A cache is a file anyone may have written: a stored vector of another length, or with
    values a head's standardisation would overflow on, is a message naming the cache, not a
    traceback from TensorFlow or scikit-learn."""
    from core.errors import DataError

    data = make_dataset(tmp_path / "d", {"a": 1})
    [user] = load_dataset(data).users
    digest = content_digest(user.files[0])
    for name, vector, wrong in (("short", np.ones(3, np.float32), "has 3 values where the encoder gives 8"),
                                ("huge", np.full(8, 1e38, np.float32), r"has values not finite or over 1e\+06 in size")):
        with EmbeddingStore(tmp_path / f"{name}.sqlite") as store:
            store.put(TinyEncoder.identity, {digest: vector})
            with pytest.raises(DataError, match=f"{name}.sqlite: an embedding stored for encoder tiny@test {wrong}: "
                                                "it is not that encoder's; remove the cache file"):
                embed_users([user], TinyEncoder(), store)


def test_second_run_embeds_nothing_and_shared_images_count_once(tmp_path):
    data = make_dataset(tmp_path / "d", {"a": 3, "b": 5})  # a's 3 images are b's first 3
    users = load_dataset(data).users
    encoder = TinyEncoder()
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        before = TinyEncoder.calls
        first = embed_users(users, encoder, store)
        assert TinyEncoder.calls - before == 5  # 8 files, 5 distinct contents
        assert (store.hits, store.misses) == (0, 5)
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        before = TinyEncoder.calls
        second = embed_users(users, encoder, store)
        assert TinyEncoder.calls == before and (store.hits, store.misses) == (5, 0)
    for x, y in zip(first, second):
        assert np.array_equal(x.vectors, y.vectors) and x.used == y.used
    assert [len(u.vectors) for u in first] == [3, 5]
    assert np.array_equal(first[0].vectors, first[1].vectors[:3])


def test_bad_files_are_skipped_and_remembered(tmp_path):
    folder = tmp_path / "u"
    save(solid((1, 2, 3)), folder / "a.png")
    truncated_jpeg(folder / "b.jpg")
    (folder / "c.png").write_bytes(b"")
    (folder / "d.txt").write_text("<html>not found</html>")
    user = User("u", tuple(sorted(folder.iterdir())))
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        [out] = embed_users([user], TinyEncoder(), store)
        assert out.vectors.shape == (1, 8) and out.used == ["a.png"]
        reasons = dict(out.skipped)
        assert reasons[str(folder / "c.png")] == "empty file (0 bytes)"
        assert reasons[str(folder / "b.jpg")].startswith("corrupt image: truncated file")
        assert reasons[str(folder / "d.txt")].startswith("not an image")
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        [again] = embed_users([user], TinyEncoder(), store)
        assert store.misses == 0 and dict(again.skipped) == reasons


def test_max_images_takes_an_even_spread_then_replaces_bad_ones(tmp_path):
    folder = tmp_path / "u"
    for j in range(10):
        save(solid((j * 20, 0, 0)), folder / f"{j}.png")
    (folder / "0.png").write_bytes(b"")  # the spread of 4 from 10 starts with file 0
    user = User("u", tuple(sorted(folder.iterdir(), key=lambda p: p.name)))
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        [out] = embed_users([user], TinyEncoder(), store, max_images=4)
    assert len(out.vectors) == 4 and "0.png" not in out.used and len(out.skipped) == 1


def test_embedded_data_for_training(tmp_path):
    data = make_dataset(tmp_path / "d", {"a": 3, "b": 1, "c": 2})
    (data / "images" / "b" / "img00.png").write_bytes(b"")  # b has no usable image
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        embedded = EmbeddedData.build(load_dataset(data), TinyEncoder(), store)
    assert embedded.user_ids == ["a", "c"] and len(embedded) == 2
    assert embedded.user_images(0).shape == (3, 8) and embedded.user_images(1).shape == (2, 8)
    assert embedded.labels("gender").tolist() == [0, 0] and embedded.encoder == "tiny@test"
    # each row's file and user, for references that read the answer key per image
    assert embedded.files == ["img00.png", "img01.png", "img02.png", "img00.png", "img01.png"]
    assert embedded.image_users().tolist() == [0, 0, 0, 1, 1]


def test_content_digest_is_the_bytes_not_the_name(tmp_path):
    a = save(solid((9, 9, 9)), tmp_path / "a.png")
    b = tmp_path / "renamed.png"
    b.write_bytes(a.read_bytes())
    assert content_digest(a) == content_digest(b)
    with pytest.raises(Exception, match="cannot read"):
        content_digest(tmp_path / "missing.png")


def test_an_interrupted_run_keeps_the_chunks_it_finished(tmp_path, monkeypatch):
    """Killed after two chunks of two images: those four are in the cache, the rest are not."""
    import profiler.embeddings as embeddings

    class Dies(TinyEncoder):
        def embed(self, inputs):
            if Dies.done >= 2:
                raise KeyboardInterrupt
            Dies.done += 1
            return super().embed(inputs)

    Dies.done = 0
    monkeypatch.setattr(embeddings, "EMBED_CHUNK", 2)
    users = load_dataset(make_dataset(tmp_path / "d", {"a": 7})).users
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        with pytest.raises(KeyboardInterrupt):
            embed_users(users, Dies(), store)
        assert store.count("tiny@test") == 4
        before = TinyEncoder.calls
        again = embed_users(users, TinyEncoder(), store)
        assert TinyEncoder.calls - before == 3 and len(again[0].vectors) == 7


class _Locked:
    """A connection whose first ``times`` statements fail as SQLite fails a connection that
    would wait on another's change of journal mode or schema: at once, "database is locked"."""

    def __init__(self, db, times):
        self.db, self.times, self.tried = db, times, 0

    def execute(self, *args):
        import sqlite3

        self.tried += 1
        if self.tried <= self.times:
            raise sqlite3.OperationalError("database is locked")
        return self.db.execute(*args)

    def __getattr__(self, name):
        return getattr(self.db, name)

    def __enter__(self):
        return self.db.__enter__()

    def __exit__(self, *exc):
        return self.db.__exit__(*exc)


def test_a_new_cache_set_up_by_another_process_at_once_is_waited_for(tmp_path, monkeypatch):
    """Opening retries "database is locked" while another process sets up the same new file;
    past OPEN_TIMEOUT, and on any other error, it gives up with the file named."""
    import sqlite3

    from core.errors import DataError
    from profiler import embeddings

    connect = sqlite3.connect
    made = []
    monkeypatch.setattr(embeddings.sqlite3, "connect", lambda *a, **k: made.append(_Locked(connect(*a, **k), 3))
                        or made[-1])
    with EmbeddingStore(tmp_path / "a.sqlite") as store:
        assert made[0].tried == 3 + 2  # three refusals, then WAL mode and the table
        store.put("enc", {b"x": np.ones(2, np.float32)})
        assert store.get("enc", [b"x"])[b"x"].tolist() == [1.0, 1.0]
    monkeypatch.setattr(embeddings, "OPEN_TIMEOUT", 0.05)
    monkeypatch.setattr(embeddings.sqlite3, "connect", lambda *a, **k: _Locked(connect(*a, **k), 10 ** 9))
    with pytest.raises(DataError, match=r"b\.sqlite: cannot open the embedding cache: database is locked"):
        EmbeddingStore(tmp_path / "b.sqlite")
    monkeypatch.setattr(embeddings.sqlite3, "connect", connect)
    (tmp_path / "c.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match=r"c\.sqlite: cannot open the embedding cache: file is not a database"):
        EmbeddingStore(tmp_path / "c.sqlite")
    os.mkfifo(tmp_path / "d.sqlite")  # SQLite, given a device or a pipe, left its journal beside it
    with pytest.raises(DataError, match=r"d\.sqlite: cannot open the embedding cache: not a plain file \(a folder, "
                                        r"device or pipe\)"):
        EmbeddingStore(tmp_path / "d.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("d.")) == ["d.sqlite"]


def _open_and_put(args):
    import time

    path, start = args
    while time.time() < start:  # every process opens the new file at the same moment
        pass
    try:
        with EmbeddingStore(path) as store:
            store.put("enc", {bytes([1]): np.zeros(3, np.float32)})
        return "ok"
    except Exception as exc:  # noqa: BLE001 - the test reports what failed
        return f"{type(exc).__name__}: {exc}"


def test_processes_opening_one_new_cache_at_once_all_succeed(tmp_path):
    """Four processes open the same new cache file at the same moment, 20 times (before the
    retry, about one time in 13 one of them failed with "database is locked")."""
    import multiprocessing
    import time

    with multiprocessing.get_context("spawn").Pool(4) as pool:  # no fork of a process running TensorFlow
        for k in range(20):
            start = time.time() + 0.1
            outcomes = pool.map(_open_and_put, [(tmp_path / f"{k}.sqlite", start)] * 4)
            assert outcomes == ["ok"] * 4
