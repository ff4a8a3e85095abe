use super::*;
use std::time::SystemTime;

use crate::config::MacAddr;

fn ca() -> Ca {
    Ca::generate("t", SystemTime::now()).expect("ca")
}

fn settings() -> Settings {
    Settings {
        cert_ttl: Duration::from_secs(3600),
        ticket_ttl: Duration::from_secs(600),
    }
}

/// A fresh key's SubjectPublicKeyInfo, as taken from its CSR.
fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let der = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .der()
        .to_vec();
    super::super::ca::csr_public_key(&der).expect("public key")
}

fn claim(n: u8) -> Claim {
    Claim::new(
        None,
        Some(&format!("SERIAL-{n}")),
        &[MacAddr([0x52, 0x54, 0, 0, 0, n])],
    )
    .expect("claim")
}

/// A registry with one token; returns it and the token.
fn with_token(max_uses: Option<u32>, auto: bool) -> (Registry, JoinToken) {
    let mut reg = Registry::default();
    let token = JoinToken::generate();
    let plan = reg.create_token(TokenRecord::new(
        &token,
        "t".into(),
        0,
        u64::MAX / 2,
        max_uses,
        auto,
    ));
    reg.apply(&plan.changes);
    (reg, token)
}

fn input(cred: Credential, n: u8, csr: &[u8]) -> EnrollInput {
    EnrollInput {
        credential: cred,
        public_key: csr.to_vec(),
        claim: claim(n),
        inventory: serde_json::json!({}),
        agent_version: "t".into(),
        peer: None,
    }
}

fn enroll(reg: &mut Registry, token: &JoinToken, n: u8, ca: &Ca) -> (EnrollOutcome, Vec<u8>) {
    let key = csr();
    let plan = reg
        .enroll(
            input(Credential::Token(token.clone()), n, &key),
            ca,
            settings(),
            SystemTime::now(),
        )
        .expect("enroll");
    reg.apply(&plan.changes);
    (plan.outcome, key)
}

#[test]
fn lifecycle_transitions() {
    let ca = ca();
    let (mut reg, token) = with_token(None, false);
    let (out, key) = enroll(&mut reg, &token, 1, &ca);
    let id = out.node;
    assert!(out.new && out.issued.is_none());
    assert_eq!(reg.nodes[&id].state, NodeState::Pending);

    // A poll while pending persists nothing.
    let ticket = out.ticket.expect("ticket");
    let poll = reg
        .enroll(
            input(Credential::Ticket(ticket.clone()), 1, &key),
            &ca,
            settings(),
            SystemTime::now(),
        )
        .expect("poll");
    assert!(poll.changes.is_empty() && poll.outcome.issued.is_none());

    // Renew is for certified nodes only.
    assert!(matches!(
        reg.renew(&id, "00", &key, &ca, settings(), SystemTime::now()),
        Err(EnrollError::NotApproved { .. })
    ));

    let plan = reg
        .approve(&id, Some(Role::Controlplane), 10)
        .expect("approve");
    reg.apply(&plan.changes);
    let poll = reg
        .enroll(
            input(Credential::Ticket(ticket), 1, &key),
            &ca,
            settings(),
            SystemTime::now(),
        )
        .expect("poll");
    assert!(poll.outcome.issued.is_some());
    reg.apply(&poll.changes);
    assert_eq!(reg.nodes[&id].certs.len(), 1);

    // Reject revokes the unexpired certificate.
    let plan = reg.reject(&id, 20).expect("reject");
    assert_eq!(plan.outcome, 1);
    reg.apply(&plan.changes);
    assert_eq!(reg.revoked.len(), 1);
    assert_eq!(reg.nodes[&id].state, NodeState::Rejected);

    // A rejected machine cannot enroll again, and its attempt spends no token use.
    let uses = reg.tokens[token.id()].uses;
    let again = reg.enroll(
        input(Credential::Token(token.clone()), 1, &csr()),
        &ca,
        settings(),
        SystemTime::now(),
    );
    assert!(matches!(again, Err(EnrollError::Rejected(_))));
    assert_eq!(reg.tokens[token.id()].uses, uses);
}

#[test]
fn re_enrolling_an_approved_machine_needs_approval_again() {
    let ca = ca();
    let (mut reg, token) = with_token(None, false);
    let (out, _) = enroll(&mut reg, &token, 1, &ca);
    let plan = reg.approve(&out.node, None, 1).expect("approve");
    reg.apply(&plan.changes);
    let (again, _) = enroll(&mut reg, &token, 1, &ca);
    assert_eq!(again.node, out.node, "recognised");
    assert!(!again.new);
    assert!(
        again.issued.is_none(),
        "a new key is not trusted on identity alone"
    );
    assert_eq!(reg.nodes[&out.node].state, NodeState::Pending);
}

#[test]
fn auto_approve_token_issues_at_once() {
    let ca = ca();
    let (mut reg, token) = with_token(Some(5), true);
    let (out, _) = enroll(&mut reg, &token, 1, &ca);
    assert!(out.issued.is_some());
    assert_eq!(reg.nodes[&out.node].state, NodeState::Approved);
    assert_eq!(reg.tokens[token.id()].uses, 1);
}

#[test]
fn health_counts_gaps_and_ignores_replays() {
    let ca = ca();
    let (mut reg, token) = with_token(None, false);
    let (out, _) = enroll(&mut reg, &token, 1, &ca);
    let id = out.node;
    let rec = |seq| HealthRecord {
        seq,
        at_ms: 0,
        received: 0,
        uptime_secs: 0.0,
        load: [0.0; 3],
        mem_total_bytes: 0,
        mem_available_bytes: 0,
        disks: vec![],
        temperatures: vec![],
        nics: vec![],
        agent_version: String::new(),
    };
    // (name, boot, seqs, ack or refused, reports stored, reports lost)
    type Case = (
        &'static str,
        &'static str,
        Vec<u64>,
        Result<u64, ()>,
        u64,
        u64,
    );
    let cases: &[Case] = &[
        ("first batch", "b1", vec![1, 2, 3], Ok(3), 3, 0),
        ("replay", "b1", vec![2, 3], Ok(3), 3, 0),
        ("gap of two", "b1", vec![6], Ok(6), 4, 2),
        ("out of order within a batch", "b1", vec![8, 7], Ok(8), 6, 2),
        ("new boot restarts at 1", "b2", vec![1], Ok(1), 7, 2),
        ("duplicate seq in batch", "b2", vec![2, 2], Err(()), 7, 2),
        ("seq 0", "b2", vec![0], Err(()), 7, 2),
        ("bad boot id", "b 2", vec![2], Err(()), 7, 2),
    ];
    for (name, boot, seqs, want, reports, lost) in cases {
        let got = reg.report_health(&id, boot, seqs.iter().map(|s| rec(*s)).collect(), 100);
        match (got, want) {
            (Ok(plan), Ok(ack)) => {
                assert_eq!(plan.outcome, *ack, "case {name}");
                reg.apply(&plan.changes);
            }
            (Err(_), Err(())) => {}
            (got, want) => panic!("case {name}: got {got:?}, want {want:?}"),
        }
        let n = &reg.nodes[&id];
        assert_eq!(
            (n.health_reports, n.health_lost),
            (*reports, *lost),
            "case {name}"
        );
    }
}

#[test]
fn inventory_is_validated() {
    let cases: &[(&str, &str, bool)] = &[
        (
            "identity",
            r#"{"system":{"uuid":"6f1c2c6a-8e2b-4e43-9c57-0a1b2c3d4e5f"}}"#,
            true,
        ),
        (
            "mac only",
            r#"{"nics":[{"mac":"52:54:00:12:34:56"}]}"#,
            true,
        ),
        (
            "nothing identifying",
            r#"{"system":{"vendor":"QEMU"}}"#,
            false,
        ),
        ("not an object", "[1,2]", false),
        ("not json", "{", false),
        ("bad mac ignored", r#"{"nics":[{"mac":"zz"}]}"#, false),
    ];
    for (name, json, ok) in cases {
        assert_eq!(parse_inventory(json).is_ok(), *ok, "case {name}");
    }
    let huge = format!(r#"{{"x":"{}"}}"#, "a".repeat(INVENTORY_MAX));
    assert!(parse_inventory(&huge).is_err());
}

#[test]
fn hardware_rules_approve_matching_machines_only() {
    let rule = AutoApprove {
        vendor: Some("QEMU".into()),
        product: None,
        serial_prefix: Some("sn-".into()),
        role: Some(Role::Worker),
    };
    let inv = |vendor: &str, serial: &str| serde_json::json!({"system": {"vendor": vendor, "serial": serial}});
    let cases: &[(&str, serde_json::Value, bool)] = &[
        ("match", inv("qemu", "SN-1"), true),
        ("wrong vendor", inv("Dell Inc.", "SN-1"), false),
        ("wrong serial", inv("QEMU", "XX-1"), false),
        ("no system", serde_json::json!({}), false),
    ];
    for (name, v, want) in cases {
        assert_eq!(rule.matches(v), *want, "case {name}");
    }
    let empty = AutoApprove {
        vendor: None,
        product: None,
        serial_prefix: None,
        role: None,
    };
    assert!(
        !empty.matches(&inv("QEMU", "SN-1")),
        "an empty rule matches nothing"
    );

    let ca = ca();
    let (mut reg, token) = with_token(None, false);
    reg.rules = vec![rule];
    let key = csr();
    let mut i = input(Credential::Token(token), 1, &key);
    i.inventory = inv("QEMU", "SN-1");
    let plan = reg
        .enroll(i, &ca, settings(), SystemTime::now())
        .expect("enroll");
    assert!(plan.outcome.issued.is_some(), "approved by the rule");
    reg.apply(&plan.changes);
    assert_eq!(reg.nodes[&plan.outcome.node].role, Some(Role::Worker));
}

#[test]
fn inventory_is_held_deflated_and_stored_as_plain_json() {
    let text = include_str!(
        "../../../node-agent/tests/fixtures/inventory/dell-r760-handwritten.expected.json"
    );
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let inv = Inventory::new(&doc);
    assert_eq!(inv.value(), doc);
    let (vendor, product) = inv.vendor_product();
    assert_eq!(vendor.as_deref(), doc["system"]["vendor"].as_str());
    assert_eq!(product.as_deref(), doc["system"]["product"].as_str());
    // What the registry holds per node: well under half the compact text.
    let compact = doc.to_string().len();
    assert!(
        inv.held_bytes() * 2 < compact,
        "{} of {compact}",
        inv.held_bytes()
    );
    // The store row carries the document itself, so older rows (a JSON object
    // in the node record) and newer ones read the same.
    let row = serde_json::to_string(&inv).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&row).unwrap(),
        doc
    );
    let back: Inventory = serde_json::from_str(&row).unwrap();
    assert_eq!(back, inv);
    // Damaged bytes read as null, never a panic.
    let broken = Inventory(std::sync::Arc::from(&b"\x00garbage"[..]));
    assert_eq!(broken.value(), serde_json::Value::Null);
    assert_eq!(broken.vendor_product(), (None, None));
}
