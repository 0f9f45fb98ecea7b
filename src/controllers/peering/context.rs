//! What the peering controller reads: the shared context, and where virtual nodes
//! advertise their kubelet API.

use crate::{context::Shared, model::virtual_node::KubeletEndpoint};

pub(crate) struct Context {
    pub(crate) shared: Shared,
    /// Where virtual nodes advertise their kubelet API (logs, exec), if served.
    pub(crate) kubelet: Option<KubeletEndpoint>,
}

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}
