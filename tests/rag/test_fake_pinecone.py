"""The real ``pinecone`` SDK against the local fake: what the Pinecone backend will rely on."""

from __future__ import annotations

import pytest
from pinecone import (
    ApiError,
    ConflictError,
    NotFoundError,
    Pinecone,
    RateLimitError,
    ServerlessSpec,
    ServiceError,
    UnauthorizedError,
)

from tests.rag.fake_pinecone import ApiFailure, compile_filter

SPEC = ServerlessSpec(cloud="aws", region="us-east-1")

# Two namespaces of 4-d vectors; "date" is an integer yyyymmdd, as tunegraph stores it.
MANUALS = [
    ("m1", [1.0, 0.0, 0.0, 0.0], {"make": "ford", "date": 20240115, "tags": ["brakes", "abs"]}),
    ("m2", [0.9, 0.1, 0.0, 0.0], {"make": "toyota", "date": 20240131, "tags": ["brakes"]}),
    ("m3", [0.0, 1.0, 0.0, 0.0], {"make": "honda", "date": 20240201, "draft": True}),
    ("m4", [0.5, 0.5, 0.5, 0.0], {"make": "ford", "date": 20231231}),
]
CLAIMS = [
    ("c1", [1.0, 0.0, 0.0, 0.0], {"make": "ford", "date": 20240120}),
    ("c2", [0.0, 0.0, 1.0, 0.0], {"make": "kia", "date": 20240125}),
]
QUERY = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture
def pc(fake_pinecone):
    with fake_pinecone.client() as client:
        yield client


@pytest.fixture
def index(pc):
    """A serverless cosine index holding MANUALS in "manuals" and CLAIMS in "claims"."""
    pc.create_index(name="tunegraph", dimension=4, metric="cosine", spec=SPEC)
    with pc.Index("tunegraph") as idx:
        idx.upsert(vectors=MANUALS, namespace="manuals")
        idx.upsert(
            vectors=[{"id": i, "values": v, "metadata": m} for i, v, m in CLAIMS],
            namespace="claims",
        )
        yield idx


def _ids(response) -> list[str]:
    return [match.id for match in response.matches]


def test_control_plane_serverless_index_lifecycle(fake_pinecone, pc):
    assert not pc.has_index("tunegraph")
    model = pc.create_index(name="tunegraph", dimension=4, metric="cosine", spec=SPEC)
    assert model.status.ready and model.status.state == "Ready"
    assert model.host.startswith("http://127.0.0.1:") and model.host != fake_pinecone.host

    described = pc.describe_index("tunegraph")
    assert (described.dimension, described.metric) == (4, "cosine")
    assert described.spec.serverless.cloud == "aws"
    assert described.spec.serverless.region == "us-east-1"
    assert pc.has_index("tunegraph")
    assert [ix.name for ix in pc.list_indexes()] == ["tunegraph"]
    with pytest.raises(ConflictError):
        pc.create_index(name="tunegraph", dimension=4, metric="cosine", spec=SPEC)

    create = fake_pinecone.requests_to("create_index")[0]
    assert create.body == {
        "schema": {
            "fields": {"_values": {"type": "dense_vector", "dimension": 4, "metric": "cosine"}}
        },
        "name": "tunegraph",
        "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
    }
    assert create.headers["x-pinecone-api-version"] == "2026-07"
    assert create.headers["api-key"] == fake_pinecone.api_key

    pc.delete_index("tunegraph")
    assert not pc.has_index("tunegraph")
    with pytest.raises(NotFoundError):
        pc.describe_index("tunegraph")


def test_wrong_api_key_is_unauthorized(fake_pinecone):
    with (
        Pinecone(api_key="not-the-key", host=fake_pinecone.host) as pc,
        pytest.raises(UnauthorizedError),
    ):
        pc.list_indexes()


def test_namespaces_are_isolated_and_metadata_numbers_come_back_as_floats(index):
    manuals = index.query(vector=QUERY, top_k=10, namespace="manuals", include_metadata=True)
    assert _ids(manuals) == ["m1", "m2", "m4", "m3"]
    assert manuals.matches[0].score == pytest.approx(1.0)
    assert manuals.matches[0].values == []
    assert manuals.matches[0].metadata == {
        "make": "ford",
        "date": 20240115.0,
        "tags": ["brakes", "abs"],
    }
    assert isinstance(manuals.matches[0].metadata["date"], float)

    claims = index.query(vector=QUERY, top_k=10, namespace="claims", include_values=True)
    assert _ids(claims) == ["c1", "c2"]
    assert claims.matches[0].values == [1.0, 0.0, 0.0, 0.0]
    assert claims.matches[0].metadata is None
    assert index.query(vector=QUERY, top_k=10).matches == []  # the default namespace is empty


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"date": {"$gte": 20240101, "$lte": 20240131}}, ["m1", "m2"]),
        ({"date": {"$gt": 20240131}}, ["m3"]),
        ({"date": {"$lt": 20240101}}, ["m4"]),
        ({"make": {"$in": ["toyota", "honda"]}}, ["m2", "m3"]),
        ({"make": {"$nin": ["ford"]}}, ["m2", "m3"]),
        ({"make": "ford"}, ["m1", "m4"]),
        ({"make": {"$ne": "ford"}}, ["m2", "m3"]),
        ({"make": "ford", "date": {"$gte": 20240101}}, ["m1"]),
        ({"$or": [{"make": "honda"}, {"date": {"$lt": 20240101}}]}, ["m4", "m3"]),
        ({"$and": [{"tags": "brakes"}, {"make": {"$in": ["toyota"]}}]}, ["m2"]),
        ({"tags": {"$in": ["abs", "tyres"]}}, ["m1"]),
        ({"draft": {"$exists": True}}, ["m3"]),
        ({"draft": True}, ["m3"]),
        ({"tags": {"$exists": False}, "make": "ford"}, ["m4"]),
    ],
)
def test_query_metadata_filters(index, flt, expected):
    response = index.query(vector=QUERY, top_k=10, namespace="manuals", filter=flt)
    assert _ids(response) == expected


def test_malformed_filters_are_rejected_by_the_server(index):
    with pytest.raises(ApiError) as info:
        index.query(vector=QUERY, top_k=3, namespace="manuals", filter={"date": {"$gt": "2024"}})
    assert info.value.status_code == 400
    with pytest.raises(ApiError):
        index.query(vector=QUERY, top_k=3, namespace="manuals", filter={"make": {"$regex": "f"}})
    with pytest.raises(ApiError):
        index.query(vector=QUERY, top_k=3, namespace="manuals", filter={"make": {"$in": "ford"}})


def test_hybrid_query_adds_sparse_dot_to_dense_dot(fake_pinecone, pc):
    pc.create_index(name="hybrid", dimension=2, metric="dotproduct", spec=SPEC)
    with pc.Index("hybrid") as idx:
        idx.upsert(
            vectors=[
                {
                    "id": "dense-match",
                    "values": [1.0, 0.0],
                    "sparse_values": {"indices": [7], "values": [0.1]},
                },
                {
                    "id": "keyword-match",
                    "values": [0.5, 0.0],
                    "sparse_values": {"indices": [42, 7], "values": [2.0, 0.5]},
                },
                {"id": "no-sparse", "values": [0.8, 0.0], "metadata": {"make": "kia"}},
            ],
            namespace="manuals",
        )
        dense_only = idx.query(vector=[1.0, 0.0], top_k=3, namespace="manuals")
        assert _ids(dense_only) == ["dense-match", "no-sparse", "keyword-match"]

        hybrid = idx.query(
            vector=[1.0, 0.0],
            sparse_vector={"indices": [42], "values": [1.0]},
            top_k=3,
            namespace="manuals",
            include_values=True,
        )
        assert _ids(hybrid) == ["keyword-match", "dense-match", "no-sparse"]
        assert hybrid.matches[0].score == pytest.approx(0.5 + 2.0)
        assert hybrid.matches[0].sparse_values.indices == [42, 7]

        filtered = idx.query(
            vector=[1.0, 0.0],
            sparse_vector={"indices": [42], "values": [1.0]},
            top_k=3,
            namespace="manuals",
            filter={"make": "kia"},
        )
        assert _ids(filtered) == ["no-sparse"]
        assert fake_pinecone.requests_to("query")[1].body["sparseVector"] == {
            "indices": [42],
            "values": [1.0],
        }


def test_sparse_values_need_a_dotproduct_index(index):
    with pytest.raises(ApiError) as info:
        index.query(
            vector=QUERY,
            sparse_vector={"indices": [1], "values": [1.0]},
            top_k=1,
            namespace="manuals",
        )
    assert info.value.status_code == 400
    with pytest.raises(ApiError):
        index.upsert(
            vectors=[
                {"id": "s", "values": QUERY, "sparse_values": {"indices": [1], "values": [1.0]}}
            ]
        )


def test_strict_hybrid_mode_wants_a_declared_sparse_field(fake_pinecone, pc):
    fake_pinecone.hybrid_requires_sparse_field = True
    sparse_record = {
        "id": "h",
        "values": [1.0, 0.0],
        "sparse_values": {"indices": [3], "values": [1.0]},
    }

    pc.create_index(name="legacy", dimension=2, metric="dotproduct", spec=SPEC)
    with pc.Index("legacy") as idx, pytest.raises(ApiError):
        idx.upsert(vectors=[sparse_record])

    pc.indexes.create(
        name="declared",
        schema={
            "fields": {
                "_values": {"type": "dense_vector", "dimension": 2, "metric": "dotproduct"},
                "_sparse_values": {"type": "sparse_vector"},
            }
        },
        deployment={"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
    )
    with pc.Index("declared") as idx:
        assert idx.upsert(vectors=[sparse_record]).upserted_count == 1
        hit = idx.query(vector=[1.0, 0.0], sparse_vector={"indices": [3], "values": [2.0]}, top_k=1)
        assert hit.matches[0].score == pytest.approx(3.0)


def test_sparse_only_index(pc):
    pc.create_index(name="keywords", vector_type="sparse", metric="dotproduct", spec=SPEC)
    with pc.Index("keywords") as idx:
        idx.upsert(
            vectors=[
                {"id": "a", "sparse_values": {"indices": [1, 2], "values": [1.0, 1.0]}},
                {"id": "b", "sparse_values": {"indices": [2], "values": [3.0]}},
            ]
        )
        response = idx.query(sparse_vector={"indices": [2], "values": [1.0]}, top_k=2)
        assert [(m.id, m.score) for m in response.matches] == [("b", 3.0), ("a", 1.0)]
        assert idx.describe_index_stats().vector_type == "sparse"


def test_fetch_delete_and_stats(fake_pinecone, index):
    stats = index.describe_index_stats()
    assert stats.total_vector_count == 6
    assert stats.dimension == 4
    assert {name: ns.vector_count for name, ns in stats.namespaces.items()} == {
        "claims": 2,
        "manuals": 4,
    }

    fetched = index.fetch(ids=["m1", "m2", "missing"], namespace="manuals")
    assert sorted(fetched.vectors) == ["m1", "m2"]
    assert fetched.vectors["m2"].values == pytest.approx([0.9, 0.1, 0.0, 0.0])
    assert fetched.vectors["m2"].metadata["date"] == 20240131.0
    assert index.fetch(ids=["m1"], namespace="claims").vectors == {}
    assert fake_pinecone.requests_to("fetch")[0].query == {
        "ids": ["m1", "m2", "missing"],
        "namespace": ["manuals"],
    }

    index.delete(ids=["m1", "not-there"], namespace="manuals")
    assert "m1" not in index.fetch(ids=["m1"], namespace="manuals").vectors
    index.delete(filter={"date": {"$lt": 20240101}}, namespace="manuals")
    assert sorted(fake_pinecone.vectors("tunegraph", "manuals")) == ["m2", "m3"]
    index.delete(delete_all=True, namespace="claims")
    assert {n: ns.vector_count for n, ns in index.describe_index_stats().namespaces.items()} == {
        "manuals": 2
    }

    index.upsert(vectors=[("d1", QUERY)])
    assert index.describe_index_stats().namespaces["__default__"].vector_count == 1
    with pytest.raises(NotFoundError):
        index.delete(delete_all=True, namespace="claims")  # serverless: that namespace is gone


def test_wrong_dimension_is_a_400(index):
    with pytest.raises(ApiError) as info:
        index.upsert(vectors=[("bad", [1.0, 2.0])], namespace="manuals")
    assert info.value.status_code == 400
    assert "dimension" in str(info.value)


def test_sdk_retries_429_and_503_itself_and_the_fake_counts_every_attempt(fake_pinecone, index):
    fake_pinecone.reset_calls()
    fake_pinecone.fail_next("upsert", 2, status=429)
    assert index.upsert(vectors=[("r1", QUERY)], namespace="manuals").upserted_count == 1
    assert fake_pinecone.calls["upsert"] == 3
    assert fake_pinecone.injected["upsert"] == 2

    # Four failures exhaust the SDK's own policy (1 attempt + 3 retries): the error surfaces.
    fake_pinecone.fail_next("upsert", 4, status=503, message="backend overloaded")
    with pytest.raises(ServiceError, match="backend overloaded"):
        index.upsert(vectors=[("r2", QUERY)], namespace="manuals")
    assert fake_pinecone.calls["upsert"] == 7
    fake_pinecone.fail_next("query", 4, status=429)
    with pytest.raises(RateLimitError):
        index.query(vector=QUERY, top_k=1, namespace="manuals")

    # A dropped connection is retried too.
    fake_pinecone.fail_next("fetch", drop_connection=True)
    assert "m1" in index.fetch(ids=["m1"], namespace="manuals").vectors
    assert fake_pinecone.calls["fetch"] == 2

    # Not retried: a 400 is final.
    fake_pinecone.fail_next("describe_index_stats", status=400)
    with pytest.raises(ApiError):
        index.describe_index_stats()
    assert fake_pinecone.calls["describe_index_stats"] == 1


def test_batched_upsert_reports_failed_batches_instead_of_raising(fake_pinecone, index):
    fake_pinecone.reset_calls()
    fake_pinecone.fail_next("upsert", 4, status=503)
    vectors = [(f"b{i}", [1.0, float(i), 0.0, 0.0]) for i in range(6)]
    response = index.upsert(
        vectors=vectors, namespace="batch", batch_size=2, max_concurrency=1, show_progress=False
    )
    assert response.upserted_count == 4
    assert response.has_errors
    assert [item["id"] for item in response.failed_items] == ["b0", "b1"]
    assert response.errors[0].retryable
    assert fake_pinecone.calls["upsert"] == 4 + 2

    retried = index.upsert(vectors=response.failed_items, namespace="batch")
    assert retried.upserted_count == 2
    assert len(fake_pinecone.vectors("tunegraph", "batch")) == 6


def test_over_the_batch_limit_is_rejected(fake_pinecone, index):
    fake_pinecone.max_batch = 3
    with pytest.raises(ApiError):
        index.upsert(vectors=[(f"x{i}", QUERY) for i in range(4)])


@pytest.mark.parametrize(
    ("metadata", "flt", "matches"),
    [
        ({"tags": ["a", "b"]}, {"tags": "b"}, True),
        ({"tags": ["a", "b"]}, {"tags": {"$ne": "b"}}, False),
        ({"tags": ["a", "b"]}, {"tags": {"$nin": ["c"]}}, True),
        ({"n": 1}, {"n": True}, False),
        ({"n": True}, {"n": 1}, False),
        ({"n": 3.0}, {"n": 3}, True),
        ({}, {"n": {"$ne": 1}}, True),
        ({}, {"n": {"$gt": 0}}, False),
        ({"n": "5"}, {"n": {"$gt": 0}}, False),
        ({"a": 1, "b": 2}, {}, True),
        ({"a": 1}, {"$or": [{"a": 2}, {"$and": [{"a": {"$gte": 1}}, {"a": {"$lt": 2}}]}]}, True),
    ],
)
def test_filter_semantics(metadata, flt, matches):
    assert compile_filter(flt)(metadata) is matches


@pytest.mark.parametrize(
    "flt",
    [
        {"$and": {}},
        {"$or": []},
        {"$not": {"a": 1}},
        {"a": {"$in": "x"}},
        {"a": {"$exists": 1}},
        {"a": [1]},
        {"a": {}},
    ],
)
def test_invalid_filters(flt):
    with pytest.raises(ApiFailure):
        compile_filter(flt)
