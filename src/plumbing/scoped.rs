//! The I/O of a scoped watch (`plumbing::scope` decides): one cluster-wide watch, lists of
//! the namespaces that enter the scope, and which namespaces its store covers, for readers
//! that must not decide anything from a namespace not yet listed.

use std::{
    collections::{BTreeSet, VecDeque},
    fmt::Debug,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use futures::{Stream, StreamExt, channel::mpsc, stream::FuturesUnordered};
use kube::{
    Api, Client, Resource,
    api::ListParams,
    runtime::{
        WatchStreamExt,
        reflector::Store,
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::scope::{Covering, Scoping, Step};

/// The namespaces a scoped watch keeps.
pub(crate) type Namespaces = Arc<BTreeSet<String>>;

/// How long a failed namespace list waits before it is tried again.
const LIST_RETRY: Duration = Duration::from_secs(2);
/// Namespace lists in flight per watch: each is an HTTP/1.1 connection of its own, kept
/// in the pool for a while after (memory), and they compete with the controllers' writes.
const LISTS_AT_ONCE: usize = 2;

/// Which namespaces a watch's store holds completely, changed in place (a copy per change
/// would cost the whole set each time a namespace is offloaded).
#[derive(Clone)]
pub(crate) struct Coverage(Option<Arc<Covered>>);

#[derive(Default)]
struct Covered {
    namespaces: RwLock<BTreeSet<String>>,
    /// Told of each namespace as it comes to be covered.
    entered: Mutex<Vec<mpsc::UnboundedSender<String>>>,
}

impl Coverage {
    /// A watch of every namespace (once it has listed).
    pub(crate) fn everything() -> Self {
        Self(None)
    }

    /// A scoped watch's, covering nothing yet.
    pub(crate) fn scoped() -> Self {
        Self(Some(Arc::default()))
    }

    /// Whether the store holds every object of `namespace`.
    pub(crate) fn covers(&self, namespace: &str) -> bool {
        self.0.as_ref().is_none_or(|c| {
            c.namespaces
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(namespace)
        })
    }

    /// Namespaces as they come to be covered (readers that waited for them look again).
    pub(crate) fn entered(&self) -> impl Stream<Item = String> + Send + 'static {
        let Some(covered) = &self.0 else {
            return futures::stream::empty().boxed();
        };
        let (tx, rx) = mpsc::unbounded();
        covered
            .entered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx.boxed()
    }

    /// What `changes` removed: before the purge of those namespaces is applied.
    fn leave(&self, changes: &[Covering]) {
        let Some(covered) = &self.0 else { return };
        let mut namespaces = covered
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            match change {
                Covering::Left(namespace) => {
                    namespaces.remove(namespace);
                }
                Covering::Now(now) => namespaces.retain(|n| now.contains(n)),
                Covering::Entered(_) => {}
            }
        }
    }

    /// What `changes` added: once their objects are applied.
    fn enter(&self, changes: Vec<Covering>) {
        let Some(covered) = &self.0 else { return };
        let mut entered = Vec::new();
        {
            let mut namespaces = covered
                .namespaces
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for change in changes {
                match change {
                    Covering::Entered(namespace) => {
                        if namespaces.insert(namespace.clone()) {
                            entered.push(namespace);
                        }
                    }
                    Covering::Now(now) => {
                        for namespace in now {
                            if namespaces.insert(namespace.clone()) {
                                entered.push(namespace);
                            }
                        }
                    }
                    Covering::Left(_) => {}
                }
            }
        }
        let mut subscribers = covered
            .entered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|tx| entered.iter().all(|n| tx.unbounded_send(n.clone()).is_ok()));
    }
}

/// The store's objects of `namespace`.
fn stored<K>(store: &Store<K>, namespace: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .map(|o| (**o).clone())
        .collect()
}

/// What woke the loop.
enum Input<K> {
    Watch(Option<Result<Event<K>, watcher::Error>>),
    Scope,
    Listed(String, u64, Result<Vec<K>, kube::Error>),
}

/// One namespace listed with the watch's selectors, after `delay`.
async fn list<K>(
    client: Client,
    params: ListParams,
    namespace: String,
    generation: u64,
    delay: Duration,
) -> (String, u64, Result<Vec<K>, kube::Error>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    tokio::time::sleep(delay).await;
    let items = Api::<K>::namespaced(client, &namespace)
        .list(&params)
        .await
        .map(|l| l.items);
    (namespace, generation, items)
}

/// The events of a cluster-wide watch of `K` with `config`, kept for the namespaces in
/// `scope` only, for a reflector writing `store`; `covered` is told which namespaces the
/// store holds completely (a namespace added only once its events were applied: the
/// reflector polls for the next event after applying the last).
pub(crate) fn events<K>(
    client: Client,
    config: watcher::Config,
    mut scope: watch::Receiver<Namespaces>,
    store: Store<K>,
    covered: Coverage,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + kube::runtime::reflector::Lookup<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let params = ListParams {
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
        ..ListParams::default()
    };
    let watch_of = {
        let client = client.clone();
        move || {
            watcher::watcher(Api::<K>::all(client.clone()), config.clone())
                .default_backoff()
                .boxed()
        }
    };
    async_stream::stream! {
        let mut watch = watch_of();
        let mut state = Scoping::<K>::new(scope.borrow_and_update().as_ref().clone());
        let mut lists = FuturesUnordered::new();
        let mut queued: VecDeque<(String, u64)> = VecDeque::new();
        let mut scope_open = true;
        loop {
            while lists.len() < LISTS_AT_ONCE && !state.relisting() {
                let Some((namespace, generation)) = queued.pop_front() else {
                    break;
                };
                if state.still_listing(&namespace, generation) {
                    lists.push(list::<K>(client.clone(), params.clone(), namespace, generation, Duration::ZERO));
                }
            }
            let input = tokio::select! {
                event = watch.next() => Input::Watch(event),
                changed = scope.changed(), if scope_open => {
                    scope_open = changed.is_ok();
                    Input::Scope
                }
                Some((namespace, generation, items)) = lists.next(),
                    if !lists.is_empty() && !state.relisting() =>
                {
                    Input::Listed(namespace, generation, items)
                }
            };
            let steps = match input {
                Input::Watch(Some(Ok(event))) => state.watched(event, |n| stored(&store, n)),
                Input::Watch(Some(Err(e))) => {
                    yield Err(e);
                    continue;
                }
                Input::Watch(None) => break,
                Input::Scope => {
                    let wanted = scope.borrow_and_update().as_ref().clone();
                    state.rescope(wanted, |n| stored(&store, n))
                }
                Input::Listed(namespace, generation, Ok(items)) => {
                    let held = stored(&store, &namespace);
                    state.listed(&namespace, generation, items, held)
                }
                Input::Listed(namespace, generation, Err(e)) => {
                    if state.still_listing(&namespace, generation) {
                        tracing::warn!(kind = <K as Resource>::kind(&()).as_ref(), %namespace, error = %e, "namespace list failed; retrying");
                        lists.push(list::<K>(client.clone(), params.clone(), namespace, generation, LIST_RETRY));
                    }
                    continue;
                }
            };
            // Namespaces that left stop being covered before their purge is applied.
            let changes = state.take_changes();
            covered.leave(&changes);
            for step in steps {
                match step {
                    Step::Emit(event) => yield Ok(event),
                    Step::List { namespace, generation } => queued.push_back((namespace, generation)),
                    Step::Relist => {
                        watch = watch_of();
                        lists = FuturesUnordered::new();
                        queued.clear();
                    }
                }
            }
            // Polled again, so the reflector has applied every event above.
            covered.enter(changes);
        }
    }
}
