//! Reflection into the peered clusters, the job Liqo's virtual kubelet does: `pods` runs
//! offloaded pods there as twins, `namespace_objects` copies what they need to start
//! (ConfigMaps, Secrets, ServiceAccounts); `forge` and `objects` are the pure translations
//! between a local object and its remote counterpart.

pub mod forge;
pub mod namespace_objects;
pub mod objects;
pub mod pods;
