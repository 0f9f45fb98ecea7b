//! The pure translations between a local object and its remote counterpart: `twin` for
//! pods (and the status reflected back), `objects` for ConfigMaps, Secrets and
//! ServiceAccounts, `services` for Services and EndpointSlices, `network` for Ingresses
//! (and their status back) and NetworkPolicies, `claims` for the PersistentVolumeClaims of
//! offloaded pods, `home_api` for the home cluster's token and address in a twin
//! (`run --home-api-access=token`).

pub(crate) mod claims;
pub(crate) mod home_api;
pub(crate) mod network;
pub(crate) mod objects;
pub(crate) mod services;
pub(crate) mod twin;
