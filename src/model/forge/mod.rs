//! The pure translations between a local object and its remote counterpart: `twin` for
//! pods (and the status reflected back), `objects` for ConfigMaps, Secrets and
//! ServiceAccounts, `services` for Services and EndpointSlices, `claims` for the
//! PersistentVolumeClaims of offloaded pods.

pub(crate) mod claims;
pub(crate) mod objects;
pub(crate) mod services;
pub(crate) mod twin;
