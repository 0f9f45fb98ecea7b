//! Reflection into the peered clusters, the job Liqo's virtual kubelet does: `pods` runs
//! offloaded pods there as twins; `forge` is the pure translation between a local object
//! and its remote counterpart.

pub mod forge;
pub mod pods;
