//! Floor 4, the admission webhooks: the HTTPS handlers (`server`), what they read instead
//! of calling the API server (`lookup`, over the shared watches), and the webhook
//! configurations registered with the API server (`registration`).

pub(crate) mod lookup;
pub(crate) mod registration;
pub mod server;
