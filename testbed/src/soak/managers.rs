//! The managers: one per cluster, and on cluster 1 two replicas electing a leader through
//! the Lease `namespace-offloading-leader`. Either replica of cluster 1 can be killed
//! (SIGKILL) and started again; each start appends to the same log.

use std::path::{Path, PathBuf};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::Mutex;

use super::{LABELS, MANAGER_NAMESPACE, SoakError, call};
use crate::{Testbed, manager::Manager};

/// The Lease the replicas of cluster 1 elect their leader with.
pub const LEADER_LEASE: &str = "namespace-offloading-leader";

/// Cluster 1's replicas, by instance name (the Lease's holder identity).
pub const REPLICAS: [&str; 2] = ["cluster-1-manager-a", "cluster-1-manager-b"];

/// One manager process and how to start it again.
pub struct Slot {
    pub name: String,
    kubeconfig: PathBuf,
    register: bool,
    flags: Vec<String>,
    pub manager: Option<Manager>,
}

pub struct Managers {
    binary: PathBuf,
    log_dir: PathBuf,
    /// Cluster 1's replicas a and b, then the managers of clusters 2 and 3.
    pub slots: Vec<Mutex<Slot>>,
}

impl Managers {
    /// Starts cluster 1's two replicas (replica a registers the webhooks, as the one
    /// installed manager of the reference topology does) and one manager in each remote.
    pub async fn start(binary: &Path, tb: &Testbed) -> Result<Self, SoakError> {
        let mut slots = Vec::new();
        for (n, name, register) in [
            (1, REPLICAS[0], true),
            (1, REPLICAS[1], false),
            (2, "cluster-2-manager", false),
            (3, "cluster-3-manager", false),
        ] {
            let mut slot = Slot {
                name: name.to_owned(),
                kubeconfig: tb.cluster(n).kubeconfig().to_owned(),
                register,
                flags: vec![
                    format!("--namespace={MANAGER_NAMESPACE}"),
                    format!("--cluster-labels={}", LABELS[n - 1]),
                ],
                manager: None,
            };
            slot.manager = Some(start(binary, &tb.log_dir(), &slot).await?);
            slots.push(Mutex::new(slot));
        }
        Ok(Self {
            binary: binary.to_owned(),
            log_dir: tb.log_dir(),
            slots,
        })
    }

    /// SIGKILLs cluster 1's replica `index` (0 or 1) and waits for it to be gone.
    pub async fn kill(&self, index: usize) -> Result<String, SoakError> {
        let slot = self.slot(index)?;
        let mut slot = slot.lock().await;
        if let Some(mut manager) = slot.manager.take() {
            // Process::stop sends SIGKILL and reaps the process.
            manager.process.stop();
        }
        Ok(slot.name.clone())
    }

    /// Starts cluster 1's replica `index` again (a no-op when it runs).
    pub async fn restart(&self, index: usize) -> Result<(), SoakError> {
        let slot = self.slot(index)?;
        let mut slot = slot.lock().await;
        if slot.manager.is_none() {
            slot.manager = Some(start(&self.binary, &self.log_dir, &slot).await?);
        }
        Ok(())
    }

    fn slot(&self, index: usize) -> Result<&Mutex<Slot>, SoakError> {
        self.slots
            .get(index)
            .ok_or_else(|| SoakError::Setup(format!("no manager slot {index}")))
    }

    /// Which of cluster 1's replicas holds the Lease (its index), if either does.
    pub async fn leader(&self, client: &kube::Client) -> Result<Option<usize>, SoakError> {
        let holder = holder(client).await?;
        Ok(REPLICAS.iter().position(|r| Some(*r) == holder.as_deref()))
    }

    /// Every manager log, for the panic check and a failure's report.
    pub fn logs(&self) -> Vec<PathBuf> {
        let mut names = REPLICAS.to_vec();
        names.extend(["cluster-2-manager", "cluster-3-manager"]);
        names
            .iter()
            .map(|n| self.log_dir.join(format!("{n}.log")))
            .collect()
    }
}

/// The Lease's holder identity on cluster 1.
pub async fn holder(client: &kube::Client) -> Result<Option<String>, SoakError> {
    let leases = Api::<Lease>::namespaced(client.clone(), MANAGER_NAMESPACE);
    let lease = call("reading the leader Lease", leases.get_opt(LEADER_LEASE)).await?;
    Ok(lease.and_then(|l| l.spec?.holder_identity))
}

async fn start(binary: &Path, log_dir: &Path, slot: &Slot) -> Result<Manager, SoakError> {
    crate::manager::start(
        binary,
        log_dir,
        &slot.name,
        &slot.kubeconfig,
        slot.register,
        &slot.flags,
    )
    .await
    .map_err(SoakError::Setup)
}
