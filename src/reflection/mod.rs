//! Reflection into the peered clusters, the job Liqo's virtual kubelet does: `pods` runs
//! offloaded pods there as twins, `namespace_objects` copies what they need to start
//! (ConfigMaps, Secrets, ServiceAccounts) and what reaches them (Services, EndpointSlices),
//! `events` records twins' events on their local pods, `claims` provisions offloaded pods'
//! PersistentVolumeClaims in their cluster. The pure translations between a
//! local object and its remote counterpart are in `model::forge` and `model::translation`.

pub(crate) mod claims;
pub(crate) mod events;
pub(crate) mod namespace_objects;
pub(crate) mod pods;
