"""History navigation: sortable columns, numbered pages, whole-row links, previous / next on a record
and "Analyse another"."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from tests.conftest import add_analysis, client_for, user_id

pytestmark = pytest.mark.both_databases

T0 = datetime(2026, 3, 1, 9, 0)


def listed(body: str) -> list[int]:
    """Record ids in the order the history table shows them."""
    return [int(found) for found in re.findall(r'class="row-link" href="/history/(\d+)[?"]', body)]


def page_numbers(body: str) -> list[str]:
    """The numbered page links and gaps of the pagination, in order ("…" for a gap)."""
    nav = re.search(r'<ol class="page-numbers">(.*?)</ol>', body, re.S)
    assert nav, "no numbered pagination"
    return re.findall(r">(\d+|…)</", nav.group(1))


@pytest.fixture
def records(app, alice):
    """Five of alice's records: two share one second (the tie the id breaks), scenarios and statuses mixed."""
    owner = user_id(app, "alice")
    return {
        "old": add_analysis(app, owner, scenario="medical", status="done", created_at=T0, text="old"),
        "tie_a": add_analysis(app, owner, scenario="service", status="failed", created_at=T0 + timedelta(hours=1)),
        "tie_b": add_analysis(app, owner, scenario="service", status="done", created_at=T0 + timedelta(hours=1)),
        "edu": add_analysis(app, owner, scenario="education", status="done", created_at=T0 + timedelta(hours=2)),
        "new": add_analysis(app, owner, scenario="medical", status="pending", created_at=T0 + timedelta(hours=3)),
    }


def test_default_order_is_newest_first_with_the_id_breaking_ties(alice, records):
    """Without ?sort= the list is newest first; two records of the same second are ordered by id, descending."""
    r = records
    assert listed(alice.get("/history/").get_data(as_text=True)) == [
        r["new"],
        r["edu"],
        r["tie_b"],
        r["tie_a"],
        r["old"],
    ]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("time", ["old", "tie_a", "tie_b", "edu", "new"]),
        ("id", ["old", "tie_a", "tie_b", "edu", "new"]),
        ("-id", ["new", "edu", "tie_b", "tie_a", "old"]),
        ("scenario", ["edu", "old", "new", "tie_a", "tie_b"]),
        ("-scenario", ["tie_b", "tie_a", "new", "old", "edu"]),
        ("status", ["old", "tie_b", "edu", "tie_a", "new"]),
    ],
)
def test_sort_orders(alice, records, sort, expected):
    """Each whitelisted column sorts both ways; within equal values the time, then the id, decide."""
    body = alice.get(f"/history/?sort={sort}").get_data(as_text=True)
    assert listed(body) == [records[key] for key in expected]


def test_column_headers_link_to_their_sort_and_mark_the_current_one(alice, records):
    """A header sorts by its column (descending first, then ascending) and the sorted one says so (aria-sort)."""
    body = alice.get("/history/?sort=-scenario").get_data(as_text=True)
    assert 'href="/history/?sort=scenario"' in body  # already descending: the header flips it
    assert 'href="/history/?sort=-id"' in body
    assert re.search(
        r'<th scope="col" aria-sort="descending">\s*<a class="sort-link" href="/history/\?sort=scenario"', body
    )


def test_unknown_sort_is_named_and_the_default_order_used(alice, records):
    """?sort=password is refused with a message on the page (not a 500, not silence); the default order stays."""
    response = alice.get("/history/?sort=password")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "“password” is not a column the list can be sorted by." in body
    assert listed(body)[0] == records["new"]


def test_filters_and_sort_ride_along_in_page_and_row_links(app, alice, records):
    """Page links and row links carry the active filters and sort, so paging and previous / next follow the list."""
    app.config["PRISM_PAGE_SIZE"] = 1
    body = alice.get("/history/?scenario=service&sort=id").get_data(as_text=True)
    assert 'href="/history/?page=2&amp;scenario=service&amp;sort=id"' in body
    assert f'class="row-link" href="/history/{records["tie_a"]}?scenario=service&amp;sort=id"' in body


def test_numbered_pagination_shows_edges_and_neighbours(app, alice):
    """Page 8 of 40 lists 1 2 … 7 8 9 … 40, marks 8 as current, and has previous and next links."""
    app.config["PRISM_PAGE_SIZE"] = 1
    owner = user_id(app, "alice")
    for n in range(40):
        add_analysis(app, owner, created_at=T0 + timedelta(minutes=n))
    body = alice.get("/history/?page=8").get_data(as_text=True)
    assert page_numbers(body) == ["1", "2", "…", "7", "8", "9", "…", "40"]
    assert re.search(r'href="/history/\?page=8"[^>]*aria-current="page"', body)
    assert 'href="/history/?page=7" rel="prev"' in body and 'href="/history/?page=9" rel="next"' in body
    assert "Page 8 of 40 · 40 records" in body


def test_rows_are_whole_links_with_a_real_anchor(alice, records):
    """Each row carries one real link (keyboard, screen readers) that the CSS stretches over the row."""
    body = alice.get("/history/").get_data(as_text=True)
    assert body.count('<tr class="row-linked">') == 5
    assert f'aria-label="Record #{records["old"]}">#{records["old"]}</a>' in body


def test_previous_and_next_follow_the_list_across_pages(app, alice, records):
    """A record's previous / next are its neighbours in the list's order, even where a page ends between them."""
    app.config["PRISM_PAGE_SIZE"] = 2
    r = records
    # Newest first: new, edu | tie_b, tie_a | old. edu ends page 1; its next is tie_b on page 2.
    body = alice.get(f"/history/{r['edu']}").get_data(as_text=True)
    assert f'href="/history/{r["new"]}" rel="prev"' in body
    assert f'href="/history/{r["tie_b"]}" rel="next"' in body
    # Ties: tie_b comes before tie_a (same second, higher id first).
    body = alice.get(f"/history/{r['tie_b']}").get_data(as_text=True)
    assert f'href="/history/{r["tie_a"]}" rel="next"' in body
    # The ends of the list have one side only.
    assert 'rel="prev"' not in alice.get(f"/history/{r['new']}").get_data(as_text=True)
    assert 'rel="next"' not in alice.get(f"/history/{r['old']}").get_data(as_text=True)


def test_previous_and_next_keep_the_lists_filters_and_sort(alice, records):
    """Opened from a filtered, sorted list, previous / next stay in that list and keep its query."""
    r = records
    body = alice.get(f"/history/{r['tie_a']}?scenario=service&sort=id").get_data(as_text=True)
    assert f'href="/history/{r["tie_b"]}?scenario=service&amp;sort=id" rel="next"' in body
    assert 'rel="prev"' not in body  # old is earlier by id, but not a service record
    assert 'href="/history/?scenario=service&amp;sort=id">Back to the list' in body


def test_previous_and_next_stay_in_the_users_own_history(app, alice, records):
    """Another user's records between alice's are never her neighbours."""
    bobs = add_analysis(app, client_for_user(app, "bob"), created_at=T0 + timedelta(hours=2, minutes=30))
    body = alice.get(f"/history/{records['edu']}").get_data(as_text=True)
    assert f'href="/history/{records["new"]}" rel="prev"' in body
    assert f"/history/{bobs}" not in body


def client_for_user(app, username: str) -> int:
    client_for(app, username)
    return user_id(app, username)


def test_finished_record_offers_analyse_another_in_its_scenario(app, alice):
    """After a result, the record page links back to the same scenario's form."""
    record = add_analysis(app, user_id(app, "alice"), scenario="service", text="hello")
    body = alice.get(f"/history/{record}").get_data(as_text=True)
    assert re.search(r'<a class="button button-small" href="/service/">Analyse another</a>', body)


def test_no_analyse_another_while_pending_or_for_an_admin_reading(app, alice, admin_client):
    """A record still queued, and another user's record read by an admin, offer no "Analyse another"."""
    pending = add_analysis(app, user_id(app, "alice"), scenario="service", status="pending", text="wait")
    done = add_analysis(app, user_id(app, "alice"), scenario="service", text="done")
    assert "Analyse another" not in alice.get(f"/history/{pending}").get_data(as_text=True)
    assert "Analyse another" not in admin_client.get(f"/history/{done}").get_data(as_text=True)


def test_admin_all_history_sorts_pages_and_walks_everyones_records(app, admin_client):
    """The admin list shares the table: sortable, and an admin reading a record steps through everyone's."""
    alices = add_analysis(app, client_for_user(app, "alice"), scenario="service", created_at=T0)
    bobs = add_analysis(app, client_for_user(app, "bob"), scenario="medical", created_at=T0 + timedelta(hours=1))
    assert listed(admin_client.get("/admin/analyses?sort=time").get_data(as_text=True)) == [alices, bobs]
    assert listed(admin_client.get("/admin/analyses?sort=-scenario").get_data(as_text=True)) == [alices, bobs]
    body = admin_client.get(f"/history/{alices}").get_data(as_text=True)
    assert f'href="/history/{bobs}" rel="prev"' in body
    assert 'href="/admin/analyses">Back to the list' in body
