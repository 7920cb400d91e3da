//! docs/protocol.md's op table is the contract other-language clients are
//! written from: it must list exactly the ops the code has, with the same
//! codes, names and response codes, and each op must have its section.

use sluice_protocol::ops::{Op, RESPONSE_BIT};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"));

/// `(request code, response cell, name)` of each row of the table under `## Ops`.
fn doc_rows() -> Vec<(u16, String, String)> {
    let section = DOC
        .split("\n## Ops\n")
        .nth(1)
        .expect("docs/protocol.md has an `## Ops` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `0x"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let code = cells[1].trim_matches('`').trim_start_matches("0x");
            let code = u16::from_str_radix(code, 16).unwrap_or_else(|_| panic!("bad code in {l}"));
            let name = cells[3]
                .strip_prefix('[')
                .and_then(|n| n.split(']').next())
                .unwrap_or_else(|| panic!("no [Name](link) in {l}"));
            (code, cells[2].to_owned(), name.to_owned())
        })
        .collect()
}

#[test]
fn docs_op_table_matches_the_code() {
    let rows = doc_rows();
    let documented: Vec<(u16, &str)> = rows.iter().map(|(c, _, n)| (*c, n.as_str())).collect();
    let code: Vec<(u16, &str)> = Op::ALL.iter().map(|op| (*op as u16, op.name())).collect();
    assert_eq!(
        documented, code,
        "docs/protocol.md's op table and Op differ"
    );
    for (code, response, name) in &rows {
        let op = Op::from_u16(*code).unwrap();
        if op == Op::GrantCredit {
            assert_eq!(response, "none", "{name} is one-way");
        } else {
            let expected = format!("`{:#06X}`", op.response_op()).replace("0X", "0x");
            assert!(
                response.starts_with(&expected),
                "{name}: response cell {response:?}, expected {expected}"
            );
        }
        let heading = format!("### {name} (`{:#06X}`)", code).replace("0X", "0x");
        assert!(DOC.contains(&heading), "no section {heading:?}");
    }
}

#[test]
fn codes_round_trip_and_response_ops_are_distinct() {
    for op in Op::ALL {
        assert_eq!(Op::from_u16(*op as u16), Some(*op));
        assert_eq!(op.response_op(), *op as u16 | RESPONSE_BIT);
        assert_eq!(op.response_op() & !RESPONSE_BIT, *op as u16);
    }
    assert_eq!(Op::from_u16(0x0000), None);
    assert_eq!(Op::from_u16(0x0076), None);
}
