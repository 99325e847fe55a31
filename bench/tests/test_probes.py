"""What one request asked of each server, from two snapshots of the servers' counters
(bench/probes.py), on synthetic snapshots."""

from bench import probes


def test_per_request_divides_what_changed_by_the_requests_and_drops_what_did_not():
    before = {"Redis state": {"GET": 100.0, "PING": 7.0}, "PostgreSQL replica": {"SELECT": 40.0}}
    after = {
        "Redis state": {"GET": 400.0, "PING": 7.0, "SET": 2.0},
        "PostgreSQL replica": {"SELECT": 340.0, "connection check": 200.0},
    }
    assert probes.per_request(before, after, requests=100) == {
        "Redis state": {"GET": 3.0, "SET": 0.02},
        "PostgreSQL replica": {"SELECT": 3.0, "connection check": 2.0},
    }


def test_a_counter_reset_between_the_snapshots_counts_from_zero():
    before = {"Redis cache": {"MGET": 5000.0}}
    after = {"Redis cache": {"MGET": 200.0}}
    assert probes.per_request(before, after, requests=100) == {"Redis cache": {"MGET": 2.0}}
