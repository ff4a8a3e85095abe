//! Shared by the gRPC integration tests: an in-process hub (enrollment
//! service on loopback, store in a temp dir, optionally with Talos installs),
//! and a client machine with its own key.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::v1::enroll_request::Credential;
use proto::v1::enrollment_client::EnrollmentClient;
use proto::v1::{EnrollRequest, EnrollState};
use provisioner::enroll::Authority;
use provisioner::enroll::NodeId;
use provisioner::enroll::authority::AuthoritySettings;
use provisioner::enroll::service::EnrollServer;
use provisioner::install::Installs;
use provisioner::store::EmbeddedStore;
use provisioner::timeline::Timeline;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const T: Duration = Duration::from_secs(10);

pub struct Hub {
    pub dir: tempfile::TempDir,
    pub authority: Arc<Authority>,
    pub installs: Option<Arc<Installs>>,
    pub addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub async fn start_hub() -> Hub {
    start_hub_with(AuthoritySettings::default()).await
}

pub async fn start_hub_with(settings: AuthoritySettings) -> Hub {
    start(settings, |_, _| None).await
}

/// A hub whose enrollment service also assigns installs: `installs` gets
/// the state directory and the authority.
pub async fn start(
    settings: AuthoritySettings,
    installs: impl FnOnce(&std::path::Path, &Arc<Authority>) -> Option<Arc<Installs>>,
) -> Hub {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    let server = EnrollServer::build(
        "127.0.0.1:0".parse().expect("addr"),
        store,
        dir.path(),
        settings,
        vec![],
        vec!["127.0.0.1".parse().expect("ip")],
        Arc::new(Timeline::default()),
    )
    .expect("enroll server");
    let mut server = server;
    let installs = installs(dir.path(), server.authority());
    if let Some(i) = &installs {
        server.set_installs(i.clone());
    }
    let addr = server.local_addr().expect("addr");
    let authority = server.authority().clone();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        server.run(c).await.expect("enroll server run");
    });
    Hub {
        dir,
        authority,
        installs,
        addr,
        cancel,
        task,
    }
}

impl Hub {
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(T, self.task).await;
    }

    pub fn token(&self, uses: Option<u32>, auto: bool) -> String {
        self.authority
            .create_token("test".into(), Duration::from_secs(3600), uses, auto)
            .expect("token")
            .0
            .reveal()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.authority.ca().cert_der().to_vec()
    }

    pub async fn client(
        &self,
        identity: Option<&Identity>,
    ) -> Result<EnrollmentClient<Channel>, proto::client::ClientError> {
        let id = identity.map(|i| {
            (
                vec![CertificateDer::from(i.cert.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(i.key.serialize_der())),
            )
        });
        let config = proto::client::client_config(&self.ca_der(), id)?;
        let channel = proto::client::connect(self.addr, config, T).await?;
        Ok(EnrollmentClient::new(channel))
    }
}

/// The node's current assignment (GetAssignment over its mTLS client).
pub async fn assignment(c: &mut EnrollmentClient<Channel>) -> proto::v1::Assignment {
    c.get_assignment(proto::v1::AssignmentRequest {})
        .await
        .expect("assignment")
        .into_inner()
}

/// A machine: a key, its inventory, and (once issued) its certificate.
pub struct Identity {
    pub key: KeyPair,
    pub cert: Vec<u8>,
}

/// A QEMU i440fx machine (the `qemu` profile) with one virtio disk.
pub fn inventory(uuid: &str, serial: &str, mac: &str) -> String {
    serde_json::json!({
        "system": {"vendor": "QEMU", "product": "Standard PC (i440FX + PIIX, 1996)", "uuid": uuid, "serial": serial},
        "firmware": {"mode": "bios"},
        "nics": [{"name": "eth0", "mac": mac, "link": true}],
        "disks": [{"name": "vda", "size_bytes": 1u64 << 30, "transport": "virtio", "serial": format!("disk-{serial}")}],
    })
    .to_string()
}

pub fn csr(key: &KeyPair) -> Vec<u8> {
    CertificateParams::default()
        .serialize_request(key)
        .expect("csr")
        .der()
        .to_vec()
}

/// The key as the hub takes it from a CSR.
pub fn public_key(key: &KeyPair) -> Vec<u8> {
    provisioner::enroll::ca::csr_public_key(&csr(key)).expect("public key")
}

pub fn enroll_req(cred: Credential, key: &KeyPair, inv: &str) -> EnrollRequest {
    EnrollRequest {
        credential: Some(cred),
        csr_der: csr(key),
        inventory_json: inv.to_owned(),
        agent_version: "test".into(),
    }
}

pub const U1: &str = "6f1c2c6a-8e2b-4e43-9c57-0a1b2c3d4e5f";

/// Enrolls with `token`, approves as the operator, polls: returns the node id
/// and its identity.
pub async fn enrolled(
    hub: &Hub,
    token: &str,
    uuid: &str,
    serial: &str,
    mac: &str,
) -> (NodeId, Identity) {
    let mut c = hub.client(None).await.expect("client");
    let key = KeyPair::generate().expect("key");
    let inv = inventory(uuid, serial, mac);
    let r = c
        .enroll(enroll_req(Credential::JoinToken(token.into()), &key, &inv))
        .await
        .expect("enroll")
        .into_inner();
    let id = NodeId::parse(&r.node_id).expect("node id");
    if r.state != EnrollState::Approved as i32 {
        hub.authority.approve(&id, None).expect("approve");
    }
    let r = c
        .enroll(enroll_req(Credential::Ticket(r.ticket.clone()), &key, &inv))
        .await
        .expect("poll")
        .into_inner();
    assert_eq!(r.state, EnrollState::Approved as i32);
    (
        id,
        Identity {
            key,
            cert: r.cert_der,
        },
    )
}
