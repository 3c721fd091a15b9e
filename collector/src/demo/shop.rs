//! The simulated shop's deployment: five services, each one pod in the
//! `shop` namespace of a two-node cluster, and the OTLP resource each
//! reports (service, version, SDK, Kubernetes attributes).

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use rand::Rng;
use rand::rngs::SmallRng;

use super::trace::{kv_i64, kv_str};

/// A service of the shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Svc {
    Frontend,
    Cart,
    Checkout,
    Payment,
    Shipping,
}

impl Svc {
    /// Every service, in a fixed order (`svc as usize` indexes it).
    pub const ALL: [Svc; 5] = [
        Svc::Frontend,
        Svc::Cart,
        Svc::Checkout,
        Svc::Payment,
        Svc::Shipping,
    ];

    /// `service.name`, also the Kubernetes deployment, container and DNS name.
    pub fn name(self) -> &'static str {
        match self {
            Svc::Frontend => "frontend",
            Svc::Cart => "cart",
            Svc::Checkout => "checkout",
            Svc::Payment => "payment",
            Svc::Shipping => "shipping",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Svc::Frontend => "2.14.1",
            Svc::Cart => "1.8.0",
            Svc::Checkout => "3.2.5",
            Svc::Payment => "1.11.2",
            Svc::Shipping => "0.9.7",
        }
    }

    fn language(self) -> &'static str {
        match self {
            Svc::Frontend => "nodejs",
            Svc::Cart => "go",
            Svc::Checkout => "java",
            Svc::Payment => "python",
            Svc::Shipping => "rust",
        }
    }

    /// Resident memory the service idles at, in bytes.
    pub fn base_memory(self) -> f64 {
        let mib = match self {
            Svc::Frontend => 180.0,
            Svc::Cart => 48.0,
            Svc::Checkout => 420.0,
            Svc::Payment => 96.0,
            Svc::Shipping => 24.0,
        };
        mib * 1024.0 * 1024.0
    }
}

/// One running pod of a service.
#[derive(Clone, Debug)]
pub struct Pod {
    /// `k8s.pod.name`: the deployment's name and two generated suffixes.
    pub name: String,
    /// `k8s.pod.uid`, also the `service.instance.id`.
    pub uid: String,
    /// What the service's SDK reports as its resource.
    pub resource: Resource,
}

/// The whole deployment. Pod names and uids are drawn from the generator's
/// seed, so every run looks like a fresh rollout.
#[derive(Clone, Debug)]
pub struct Shop {
    /// One pod per service, in [`Svc::ALL`] order.
    pub pods: Vec<Pod>,
}

/// The characters Kubernetes uses in generated name suffixes.
const KUBE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn kube_suffix(rng: &mut SmallRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(KUBE_ALPHABET[rng.random_range(0..KUBE_ALPHABET.len())]))
        .collect()
}

fn uuid(rng: &mut SmallRng) -> String {
    let b: [u8; 16] = rng.random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The namespace every shop pod runs in.
pub const NAMESPACE: &str = "shop";
const CLUSTER: &str = "periscope-demo";
const NODES: [&str; 2] = ["demo-node-a", "demo-node-b"];

impl Shop {
    /// Draws a deployment.
    pub fn new(rng: &mut SmallRng) -> Shop {
        let pods = Svc::ALL
            .iter()
            .enumerate()
            .map(|(i, &svc)| {
                let name = format!(
                    "{}-{}-{}",
                    svc.name(),
                    kube_suffix(rng, 10),
                    kube_suffix(rng, 5)
                );
                let uid = uuid(rng);
                let node = NODES[i % NODES.len()];
                let attrs: Vec<KeyValue> = vec![
                    kv_str("service.name", svc.name()),
                    kv_str("service.version", svc.version()),
                    kv_str("service.instance.id", &uid),
                    kv_str("deployment.environment", "demo"),
                    kv_str("telemetry.sdk.name", "opentelemetry"),
                    kv_str("telemetry.sdk.language", svc.language()),
                    kv_str("k8s.cluster.name", CLUSTER),
                    kv_str("k8s.namespace.name", NAMESPACE),
                    kv_str("k8s.deployment.name", svc.name()),
                    kv_str("k8s.pod.name", &name),
                    kv_str("k8s.pod.uid", &uid),
                    kv_str("k8s.container.name", svc.name()),
                    kv_str("k8s.node.name", node),
                    kv_str("host.name", node),
                    kv_i64("process.pid", 1),
                ];
                Pod {
                    name,
                    uid,
                    resource: Resource {
                        attributes: attrs,
                        ..Default::default()
                    },
                }
            })
            .collect();
        Shop { pods }
    }

    /// The pod of a service.
    pub fn pod(&self, svc: Svc) -> &Pod {
        &self.pods[svc as usize]
    }
}
