"""Checks of the test servers and helpers themselves (no drsink needed)."""
from urllib.parse import unquote_plus

import servers
from harness import Search, unique


def test_upload_notifies_queue(aws):
    p = aws.make_pipeline("harness")
    key = "dir/a b/ü+é.ndjson"
    aws.put(p.buckets[1], key, b'{"a":1}\n')
    bodies = aws.receive(p.queue_url) + aws.receive(p.queue_url)
    tests = [b for b in bodies if b.get("Event") == "s3:TestEvent"]
    records = [r for b in bodies for r in b.get("Records", [])]
    assert sorted(t["Bucket"] for t in tests) == sorted(p.buckets)  # one per bucket, left in place
    assert len(records) == 1
    assert records[0]["eventName"] == "ObjectCreated:Put"
    assert records[0]["s3"]["bucket"]["name"] == p.buckets[1]
    assert unquote_plus(records[0]["s3"]["object"]["key"]) == key
    assert "+" in records[0]["s3"]["object"]["key"]  # spaces are encoded as '+'
    assert aws.queue_depth(p.queue_url) == 3  # received but not deleted: in flight


def test_bulk_and_count(search):
    other = unique("other")
    res = search.bulk([
        {"create": {"_index": f"{search.prefix}-a", "_id": "1"}}, {"log_id": "1"},
        {"create": {"_index": f"{search.prefix}-b", "_id": "2"}}, {"log_id": "2"},
        {"create": {"_index": f"{other}-a", "_id": "3"}}, {"log_id": "3"},
    ])
    assert not res["errors"]
    assert search.count_by_log_id() == {"1": 1, "2": 1}
    assert {d["_index"] for d in search.docs()} == {f"{search.prefix}-a", f"{search.prefix}-b"}
    assert search.docs(f"{search.prefix}-nothing-*") == []


def test_docs_pages_past_one_search(search):
    n = 2500
    lines = []
    for i in range(n):
        lines += [{"create": {"_index": f"{search.prefix}-x", "_id": str(i)}}, {"log_id": str(i)}]
    assert not search.bulk(lines)["errors"]
    counts = search.count_by_log_id()
    assert len(counts) == n and set(counts.values()) == {1}


def test_duplicate_create_is_409_version_conflict(search):
    action = {"create": {"_index": f"{search.prefix}-a", "_id": "dup"}}
    assert not search.bulk([action, {"log_id": "dup", "v": 1}])["errors"]
    res = search.bulk([action, {"log_id": "dup", "v": 2}])
    item = res["items"][0]["create"]
    assert res["errors"] is True
    assert item["status"] == 409
    assert item["error"]["type"] == "version_conflict_engine_exception"
    single = search.request("PUT", f"{search.prefix}-a/_create/dup", json={"v": 3})
    assert single.status_code == 409
    assert [d["_source"]["v"] for d in search.docs()] == [1]
    # `index` overwrites instead: 200 "updated"
    res = search.bulk([{"index": {"_index": f"{search.prefix}-a", "_id": "dup"}}, {"log_id": "dup", "v": 4}])
    assert (res["items"][0]["index"]["status"], res["items"][0]["index"]["result"]) == (200, "updated")


def test_elasticsearch_restart_keeps_data(elasticsearch_url):
    es = Search("elasticsearch", elasticsearch_url, unique("restart"))
    assert not es.bulk([{"create": {"_index": f"{es.prefix}-a", "_id": "1"}}, {"log_id": "1"}])["errors"]
    assert servers.restart("elasticsearch") == elasticsearch_url
    assert es.count_by_log_id() == {"1": 1}
