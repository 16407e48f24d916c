//! docs/fleet-api.md documents exactly the routes the server answers: every `### METHOD
//! /api/v1/…` heading is a route in `ROUTES` (which the router dispatches from), and every
//! route has its heading.

#![allow(clippy::unwrap_used)]

use watchpost_fleet_protocol::ROUTES;

#[test]
fn the_api_document_lists_every_route_and_no_other() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/fleet-api.md"
    ))
    .unwrap();
    let documented: Vec<(String, String)> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.strip_suffix('`'))
        .filter_map(|l| {
            let (m, p) = l.split_once(' ')?;
            Some((m.to_owned(), p.split('?').next()?.to_owned()))
        })
        .collect();
    for (m, p) in ROUTES {
        assert!(
            documented.iter().any(|(dm, dp)| dm == m && dp == p),
            "{m} {p} is served but not in docs/fleet-api.md"
        );
    }
    for (m, p) in &documented {
        assert!(
            ROUTES.iter().any(|(rm, rp)| rm == m && rp == p),
            "docs/fleet-api.md documents {m} {p}, which the server does not answer"
        );
    }
    assert_eq!(documented.len(), ROUTES.len());
}
