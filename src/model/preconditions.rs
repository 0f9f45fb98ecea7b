//! Writes that touch only the object just looked at.

/// A delete precondition on the uid of the object just looked at: if it was deleted and
/// recreated by someone else in between, the API server refuses (409) instead.
pub(crate) fn only_this(meta: &kube::api::ObjectMeta) -> Option<kube::api::Preconditions> {
    meta.uid.clone().map(|uid| kube::api::Preconditions {
        uid: Some(uid),
        resource_version: None,
    })
}
