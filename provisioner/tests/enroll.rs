//! Enrollment over real gRPC + mTLS on loopback: the hub's enrollment service
//! (our TLS acceptor, tonic, the authority, the embedded store in a temp dir)
//! against a tonic client with rustls, as the node agent uses it.

use std::time::{Duration, SystemTime};

use proto::v1::enroll_request::Credential;
use proto::v1::{
    AssignmentRequest, EnrollRequest, EnrollState, HealthBatch, HealthReport, RenewRequest,
};
use provisioner::enroll::NodeId;
use provisioner::enroll::authority::AuthoritySettings;
use provisioner::enroll::registry::NodeState;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use tonic::Code;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_pending_approve_certificate() {
    let hub = start_hub().await;
    let token = hub.token(Some(1), false);
    let mut c = hub.client(None).await.expect("client");
    let key = KeyPair::generate().expect("key");
    let inv = inventory(U1, "SN-0001", "52:54:00:00:00:01");

    let r = c
        .enroll(enroll_req(Credential::JoinToken(token.clone()), &key, &inv))
        .await
        .expect("enroll")
        .into_inner();
    assert_eq!(r.state, EnrollState::Pending as i32);
    assert!(r.cert_der.is_empty(), "no certificate before approval");
    assert!(!r.ticket.is_empty());
    let id = NodeId::parse(&r.node_id).expect("node id");
    let node = hub.authority.node(&id).expect("node recorded");
    assert_eq!(node.state, NodeState::Pending);
    assert_eq!(node.inventory.value()["system"]["vendor"], "QEMU");

    // Polling while pending: still pending, nothing issued.
    let poll = enroll_req(Credential::Ticket(r.ticket.clone()), &key, &inv);
    let p = c.enroll(poll.clone()).await.expect("poll").into_inner();
    assert_eq!(p.state, EnrollState::Pending as i32);

    // A ticket with another key is refused: the ticket is bound to the enrolling key.
    let other = KeyPair::generate().expect("key");
    let stolen = enroll_req(Credential::Ticket(r.ticket.clone()), &other, &inv);
    assert_eq!(
        c.enroll(stolen).await.expect_err("other key").code(),
        Code::Unauthenticated
    );

    hub.authority
        .approve(&id, Some("worker".parse().expect("role")))
        .expect("approve");
    let p = c.enroll(poll).await.expect("poll").into_inner();
    assert_eq!(p.state, EnrollState::Approved as i32);
    assert_eq!(p.ca_der, hub.ca_der());

    let (_, cert) = x509_parser::parse_x509_certificate(&p.cert_der).expect("cert parses");
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok()),
        Some(id.as_str())
    );
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (24 * 3600..=24 * 3600 + 600).contains(&life),
        "24 h (+ backdating), got {life}"
    );

    // The certificate works: the node asks for its assignment.
    let ident = Identity {
        key,
        cert: p.cert_der,
    };
    let mut mc = hub.client(Some(&ident)).await.expect("mtls client");
    let a = mc
        .get_assignment(AssignmentRequest {})
        .await
        .expect("assignment")
        .into_inner();
    assert_eq!(a.node_id, id.as_str());
    assert_eq!(a.state, "approved");
    assert_eq!(a.role, "worker");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused() {
    let hub = start_hub().await;
    let good = hub.token(None, false);
    let expired = hub
        .authority
        .create_token("old".into(), Duration::ZERO, None, false)
        .expect("token")
        .0
        .reveal();
    let revoked = hub.token(None, false);
    hub.authority.revoke_token(&revoked[..6]).expect("revoke");
    let wrong_secret = format!("{}.0000000000000000", &good[..6]);
    let mut c = hub.client(None).await.expect("client");
    let key = KeyPair::generate().expect("key");
    let inv = inventory(U1, "SN-0001", "52:54:00:00:00:01");
    for (name, token) in [
        ("wrong secret", wrong_secret.as_str()),
        ("expired", expired.as_str()),
        ("revoked", revoked.as_str()),
        ("unknown", "zzzzzz.0123456789abcdef"),
        ("malformed", "hello"),
    ] {
        let e = c
            .enroll(enroll_req(Credential::JoinToken(token.into()), &key, &inv))
            .await
            .expect_err(name);
        assert_eq!(e.code(), Code::Unauthenticated, "case {name}: {e:?}");
    }
    assert!(
        hub.authority.nodes().is_empty(),
        "no refused attempt created a node"
    );
    let refused = hub
        .authority
        .stats()
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 5, "every refusal counted for /metrics");
    let ok = c
        .enroll(enroll_req(Credential::JoinToken(good), &key, &inv))
        .await;
    assert!(ok.is_ok(), "the good token still works: {ok:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_token_redeemed_twice_concurrently() {
    let hub = start_hub().await;
    let token = hub.token(Some(1), false);
    let mut a = hub.client(None).await.expect("client");
    let mut b = hub.client(None).await.expect("client");
    let (ka, kb) = (
        KeyPair::generate().expect("key"),
        KeyPair::generate().expect("key"),
    );
    let ra = enroll_req(
        Credential::JoinToken(token.clone()),
        &ka,
        &inventory(U1, "SN-A", "52:54:00:00:00:0a"),
    );
    let rb = enroll_req(
        Credential::JoinToken(token.clone()),
        &kb,
        &inventory(
            "0b7e3a52-1d44-4a3e-8d0f-112233445566",
            "SN-B",
            "52:54:00:00:00:0b",
        ),
    );
    let (x, y) = tokio::join!(a.enroll(ra), b.enroll(rb));
    let oks = [x.is_ok(), y.is_ok()].iter().filter(|o| **o).count();
    assert_eq!(oks, 1, "exactly one success: {x:?} / {y:?}");
    let refused = if x.is_err() {
        x.expect_err("err")
    } else {
        y.expect_err("err")
    };
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(hub.authority.nodes().len(), 1);
    let t = hub.authority.tokens();
    assert_eq!(
        t.iter().find(|t| t.id == token[..6]).map(|t| t.uses),
        Some(1)
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_requests_are_ignored() {
    let hub = start_hub().await;
    let token = hub.token(None, true);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "admin");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![
        SanType::DnsName("hub.evil.example".try_into().expect("name")),
        SanType::IpAddress("10.0.0.1".parse().expect("ip")),
    ];
    let evil_csr = params.serialize_request(&key).expect("csr").der().to_vec();
    // The request really asks for all of it.
    {
        use x509_parser::prelude::FromDer;
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&evil_csr)
                .expect("csr parses");
        let asked = req.requested_extensions().map_or(0, |e| e.count());
        assert!(asked >= 3, "the CSR requests CA, EKU and SAN ({asked})");
    }
    let mut c = hub.client(None).await.expect("client");
    let r = c
        .enroll(EnrollRequest {
            credential: Some(Credential::JoinToken(token)),
            csr_der: evil_csr,
            inventory_json: inventory(U1, "SN-0001", "52:54:00:00:00:01"),
            agent_version: "x".into(),
        })
        .await
        .expect("enroll")
        .into_inner();
    assert_eq!(r.state, EnrollState::Approved as i32, "auto-approve token");
    let (_, cert) = x509_parser::parse_x509_certificate(&r.cert_der).expect("cert");
    let bc = cert
        .basic_constraints()
        .expect("bc")
        .expect("basicConstraints present");
    assert!(!bc.value.ca, "CA:FALSE");
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("EKU present")
        .value;
    assert!(
        eku.client_auth && !eku.server_auth && !eku.any && eku.other.is_empty(),
        "clientAuth only"
    );
    let san = cert
        .subject_alternative_name()
        .expect("san")
        .expect("SAN present")
        .value;
    let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        vec![format!("URI(urn:provisioner:node:{})", r.node_id)]
    );
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .collect();
    assert_eq!(cn, vec![r.node_id.as_str()]);
    // The public key is the CSR's.
    assert_eq!(cert.public_key().raw, {
        use x509_parser::prelude::FromDer;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .expect("csr");
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr.der())
                .expect("csr");
        req.certification_request_info.subject_pki.raw.to_vec()
    });
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_expired_and_revoked_certificates_are_refused() {
    let hub = start_hub().await;
    let token = hub.token(None, false);
    let (id, good) = enrolled(&hub, &token, U1, "SN-1", "52:54:00:00:00:01").await;

    // Control: the good certificate works.
    let mut c = hub.client(Some(&good)).await.expect("client");
    c.get_assignment(AssignmentRequest {})
        .await
        .expect("good cert works");

    // A foreign CA that mints a certificate naming the same node.
    let foreign_ca =
        provisioner::enroll::ca::Ca::generate("foreign", SystemTime::now()).expect("ca");
    let fkey = KeyPair::generate().expect("key");
    let forged = foreign_ca
        .issue_node(
            &public_key(&fkey),
            &id,
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .expect("forge");
    let forged = Identity {
        key: fkey,
        cert: forged.der.to_vec(),
    };

    // Our own CA, but expired an hour ago.
    let ekey = KeyPair::generate().expect("key");
    let expired = hub
        .authority
        .ca()
        .issue_node(
            &public_key(&ekey),
            &id,
            SystemTime::now() - Duration::from_secs(2 * 3600),
            Duration::from_secs(1800),
        )
        .expect("issue");
    let expired = Identity {
        key: ekey,
        cert: expired.der.to_vec(),
    };

    for (name, ident) in [("foreign CA", &forged), ("expired", &expired)] {
        let refused = match hub.client(Some(ident)).await {
            Err(_) => true,
            Ok(mut c) => c.get_assignment(AssignmentRequest {}).await.is_err(),
        };
        assert!(refused, "case {name}: accepted");
    }

    // Revoked: rejecting the node revokes its certificates at the handshake.
    assert_eq!(hub.authority.reject(&id).expect("reject"), 1);
    let refused = match hub.client(Some(&good)).await {
        Err(_) => true,
        Ok(mut c) => c.get_assignment(AssignmentRequest {}).await.is_err(),
    };
    assert!(refused, "revoked certificate accepted");
    let failures = hub
        .authority
        .stats()
        .handshake_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        failures >= 3,
        "foreign, expired and revoked handshakes counted: {failures}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_report_as_another() {
    let hub = start_hub().await;
    let token = hub.token(None, false);
    let (a, ida) = enrolled(&hub, &token, U1, "SN-A", "52:54:00:00:00:0a").await;
    let (b, _) = enrolled(
        &hub,
        &token,
        "0b7e3a52-1d44-4a3e-8d0f-112233445566",
        "SN-B",
        "52:54:00:00:00:0b",
    )
    .await;
    assert_ne!(a, b);
    let mut c = hub.client(Some(&ida)).await.expect("client");
    // There is no node field to forge: whatever A sends lands on A.
    c.report_health(HealthBatch {
        boot_id: "boot-1".into(),
        reports: vec![HealthReport {
            seq: 1,
            agent_version: "B?".into(),
            ..Default::default()
        }],
    })
    .await
    .expect("report");
    assert_eq!(hub.authority.node(&a).expect("a").health_reports, 1);
    assert_eq!(hub.authority.node(&b).expect("b").health_reports, 0);
    let asg = c
        .get_assignment(AssignmentRequest {})
        .await
        .expect("asg")
        .into_inner();
    assert_eq!(asg.node_id, a.as_str());

    // Without a certificate, every RPC but Enroll is refused.
    let mut anon = hub.client(None).await.expect("client");
    let e = anon
        .report_health(HealthBatch {
            boot_id: "x".into(),
            reports: vec![],
        })
        .await
        .expect_err("anonymous report");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = anon
        .get_assignment(AssignmentRequest {})
        .await
        .expect_err("anonymous assignment");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = anon
        .renew(RenewRequest {
            csr_der: csr(&KeyPair::generate().expect("key")),
        })
        .await
        .expect_err("anonymous renew");
    assert_eq!(e.code(), Code::Unauthenticated);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_issues_a_certificate_for_the_new_key() {
    let hub = start_hub().await;
    let token = hub.token(None, false);
    let (id, old) = enrolled(&hub, &token, U1, "SN-1", "52:54:00:00:00:01").await;
    let mut c = hub.client(Some(&old)).await.expect("client");
    let key = KeyPair::generate().expect("key");
    let r = c
        .renew(RenewRequest { csr_der: csr(&key) })
        .await
        .expect("renew")
        .into_inner();
    let new = Identity {
        key,
        cert: r.cert_der,
    };
    assert_ne!(new.cert, old.cert);
    let mut c2 = hub.client(Some(&new)).await.expect("client");
    let a = c2
        .get_assignment(AssignmentRequest {})
        .await
        .expect("new cert works")
        .into_inner();
    assert_eq!(a.node_id, id.as_str());
    assert_eq!(hub.authority.node(&id).expect("node").certs.len(), 2);
    // A rejected node cannot renew, even on a connection that was open before.
    hub.authority.reject(&id).expect("reject");
    let e = c2
        .renew(RenewRequest {
            csr_der: csr(&KeyPair::generate().expect("key")),
        })
        .await
        .expect_err("renew after reject");
    assert!(matches!(e.code(), Code::PermissionDenied), "{e:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_retries_are_stored_once() {
    let hub = start_hub().await;
    let token = hub.token(None, false);
    let (id, ident) = enrolled(&hub, &token, U1, "SN-1", "52:54:00:00:00:01").await;
    let mut c = hub.client(Some(&ident)).await.expect("client");
    let report = |seq| HealthReport {
        seq,
        uptime_secs: seq as f64,
        ..Default::default()
    };
    let batch = |seqs: std::ops::RangeInclusive<u64>| HealthBatch {
        boot_id: "b1".into(),
        reports: seqs.map(report).collect(),
    };
    let ack = c
        .report_health(batch(1..=5))
        .await
        .expect("1..5")
        .into_inner();
    assert_eq!(ack.acked_through, 5);
    // The agent did not hear the ack and sends again, with more.
    let ack = c
        .report_health(batch(3..=7))
        .await
        .expect("3..7")
        .into_inner();
    assert_eq!(ack.acked_through, 7);
    let node = hub.authority.node(&id).expect("node");
    assert_eq!((node.health_reports, node.health_lost), (7, 0));
    let seqs: Vec<u64> = hub
        .authority
        .health_history(&id, 100)
        .expect("history")
        .iter()
        .map(|h| h.report.seq)
        .collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_survives_bogus_and_shared_uuids() {
    let hub = start_hub().await;
    let token = hub.token(None, false);
    let mut c = hub.client(None).await.expect("client");
    let mut enroll = async |uuid: &str, serial: &str, mac: &str| {
        let key = KeyPair::generate().expect("key");
        let r = c
            .enroll(enroll_req(
                Credential::JoinToken(token.clone()),
                &key,
                &inventory(uuid, serial, mac),
            ))
            .await
            .expect("enroll")
            .into_inner();
        NodeId::parse(&r.node_id).expect("id")
    };
    // Two machines claiming one UUID (cloned firmware) stay two nodes.
    let a = enroll(U1, "SN-A", "52:54:00:00:00:0a").await;
    let b = enroll(U1, "SN-B", "52:54:00:00:00:0b").await;
    assert_ne!(a, b);
    // All-zero UUIDs: the serial and NICs tell them apart.
    let z1 = enroll(
        "00000000-0000-0000-0000-000000000000",
        "SN-Z1",
        "52:54:00:00:01:01",
    )
    .await;
    let z2 = enroll(
        "00000000-0000-0000-0000-000000000000",
        "SN-Z2",
        "52:54:00:00:01:02",
    )
    .await;
    assert_ne!(z1, z2);
    // A known machine enrolling again is recognised.
    let a2 = enroll(U1, "SN-A", "52:54:00:00:00:0a").await;
    assert_eq!(a2, a);
    assert_eq!(hub.authority.nodes().len(), 4);
    assert_eq!(hub.authority.node(&a).expect("a").enrollments, 2);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_rate_limited_per_source() {
    let mut settings = AuthoritySettings::default();
    settings.rate.burst = 3;
    settings.rate.per_sec = 0.01;
    let hub = start_hub_with(settings).await;
    let mut c = hub.client(None).await.expect("client");
    let key = KeyPair::generate().expect("key");
    let inv = inventory(U1, "SN-1", "52:54:00:00:00:01");
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = c
            .enroll(enroll_req(
                Credential::JoinToken("aaaaaa.bbbbbbbbbbbbbbbb".into()),
                &key,
                &inv,
            ))
            .await;
        codes.push(r.expect_err("bad token").code());
    }
    assert_eq!(
        codes,
        vec![
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::ResourceExhausted
        ]
    );
    hub.stop().await;
}
