//! Which namespaces a scoped watch keeps, and how its store comes to hold exactly their
//! objects (the decisions only; `plumbing::scoped` does the I/O).
//!
//! A scoped watch is one cluster-wide watch whose events are kept only for the namespaces
//! in scope (those offloaded), so the manager's memory does not grow with the objects of
//! the others. A namespace that enters the scope is listed on its own while the watch's
//! events for it are held back, then those events are replayed after the list: the watch
//! is ordered, so what it says last is what the object is, and a change the list missed
//! is in the watch. A namespace where the watch never saw an object of the kind needs no
//! list (a new namespace, typically): it holds none, and whatever is made there next comes
//! through the watch. Many namespaces entering at once are cheaper as one re-list of the
//! whole watch. A namespace that leaves is purged from the store.

use std::collections::{BTreeMap, BTreeSet};

use kube::{Resource, runtime::watcher::Event};

/// More namespaces than this waiting to be listed at once: the whole watch re-lists
/// instead (one list of the cluster rather than one per namespace).
pub(crate) const RELIST_ABOVE: usize = 16;

/// What the I/O side does next.
#[derive(Debug)]
pub(crate) enum Step<K> {
    /// Pass this event to the store (and its subscribers).
    Emit(Event<K>),
    /// List this namespace; answer with [`Scoping::listed`] and the same generation.
    List { namespace: String, generation: u64 },
    /// Start the watch over: it lists everything in scope again.
    Relist,
}

/// A change of the covered namespaces.
#[derive(Debug, PartialEq)]
pub(crate) enum Covering {
    Entered(String),
    Left(String),
    /// Exactly these (after a re-list of the whole watch).
    Now(BTreeSet<String>),
}

/// A namespace being listed on its own, and the watch's events for it meanwhile.
struct Pending<K> {
    generation: u64,
    held: Vec<Event<K>>,
}

/// Where a re-list of the whole watch stands.
#[derive(Debug, PartialEq)]
enum Relist {
    No,
    /// Asked for; the watch has not started listing yet.
    Asked,
    /// Listing: what it keeps (the scope when it began).
    Keeping(BTreeSet<String>),
}

pub(crate) struct Scoping<K> {
    /// Namespaces whose objects the store holds, all of them.
    covered: BTreeSet<String>,
    pending: BTreeMap<String, Pending<K>>,
    /// What the scope says now.
    wanted: BTreeSet<String>,
    relist: Relist,
    generation: u64,
    /// How `covered` changed since the I/O side last took the changes.
    changes: Vec<Covering>,
    /// Namespaces out of scope where the watch has seen an object of this kind (since its
    /// last list). One it has not holds none: it enters the scope without a list, since
    /// any object made there meanwhile is still to come through the ordered watch.
    elsewhere: BTreeSet<String>,
}

fn namespace_of<K: Resource>(o: &K) -> Option<&str> {
    o.meta().namespace.as_deref()
}

impl<K: Resource + Clone> Scoping<K> {
    /// A watch about to list for the first time, keeping `wanted`.
    pub(crate) fn new(wanted: BTreeSet<String>) -> Self {
        Self {
            covered: BTreeSet::new(),
            pending: BTreeMap::new(),
            wanted,
            relist: Relist::Asked,
            generation: 0,
            changes: Vec::new(),
            elsewhere: BTreeSet::new(),
        }
    }

    /// Namespaces whose objects are all in the store.
    #[cfg(test)]
    pub(crate) fn covered(&self) -> &BTreeSet<String> {
        &self.covered
    }

    /// How [`Self::covered`] changed since this was last called.
    pub(crate) fn take_changes(&mut self) -> Vec<Covering> {
        std::mem::take(&mut self.changes)
    }

    /// Whether the whole watch is re-listing (namespace lists wait for it).
    pub(crate) fn relisting(&self) -> bool {
        self.relist != Relist::No
    }

    /// Whether the list of `namespace` numbered `generation` is still wanted (to retry it).
    pub(crate) fn still_listing(&self, namespace: &str, generation: u64) -> bool {
        self.relist == Relist::No
            && self
                .pending
                .get(namespace)
                .is_some_and(|p| p.generation == generation)
    }

    /// The scope changed to `wanted`; `stored` gives the store's objects of a namespace.
    pub(crate) fn rescope(
        &mut self,
        wanted: BTreeSet<String>,
        stored: impl Fn(&str) -> Vec<K>,
    ) -> Vec<Step<K>> {
        self.wanted = wanted;
        self.settle(stored)
    }

    /// Brings covered and pending namespaces to the scope (not while re-listing: the end of
    /// the re-list settles).
    fn settle(&mut self, stored: impl Fn(&str) -> Vec<K>) -> Vec<Step<K>> {
        if self.relisting() {
            return Vec::new();
        }
        let mut steps = Vec::new();
        let left: Vec<String> = self.covered.difference(&self.wanted).cloned().collect();
        for namespace in left {
            self.covered.remove(&namespace);
            self.changes.push(Covering::Left(namespace.clone()));
            let purged = stored(&namespace);
            if !purged.is_empty() {
                self.elsewhere.insert(namespace.clone());
            }
            steps.extend(purged.into_iter().map(|o| Step::Emit(Event::Delete(o))));
        }
        self.pending
            .retain(|namespace, _| self.wanted.contains(namespace));
        let (entered, empty): (Vec<String>, Vec<String>) = self
            .wanted
            .iter()
            .filter(|n| !self.covered.contains(*n) && !self.pending.contains_key(*n))
            .cloned()
            .partition(|n| self.elsewhere.contains(n));
        for namespace in empty {
            self.covered.insert(namespace.clone());
            self.changes.push(Covering::Entered(namespace));
        }
        if self.pending.len() + entered.len() > RELIST_ABOVE {
            self.pending.clear();
            self.relist = Relist::Asked;
            steps.push(Step::Relist);
            return steps;
        }
        for namespace in entered {
            self.generation += 1;
            let generation = self.generation;
            self.pending.insert(
                namespace.clone(),
                Pending {
                    generation,
                    held: Vec::new(),
                },
            );
            steps.push(Step::List {
                namespace,
                generation,
            });
        }
        steps
    }

    /// An event of the watch.
    pub(crate) fn watched(
        &mut self,
        event: Event<K>,
        stored: impl Fn(&str) -> Vec<K>,
    ) -> Vec<Step<K>> {
        match event {
            Event::Init => {
                // Whatever was being listed on its own is in this list, or left the scope.
                self.pending.clear();
                self.elsewhere.clear();
                self.relist = Relist::Keeping(self.wanted.clone());
                vec![Step::Emit(Event::Init)]
            }
            Event::InitApply(o) => match (&self.relist, namespace_of(&o)) {
                (Relist::Keeping(kept), Some(n)) if kept.contains(n) => {
                    vec![Step::Emit(Event::InitApply(o))]
                }
                (_, Some(n)) => {
                    self.elsewhere.insert(n.to_owned());
                    Vec::new()
                }
                (_, None) => Vec::new(),
            },
            Event::InitDone => {
                if let Relist::Keeping(kept) = std::mem::replace(&mut self.relist, Relist::No) {
                    // The store is swapped for the list: it holds exactly what was kept.
                    self.changes.push(Covering::Now(kept.clone()));
                    self.covered = kept;
                }
                let mut steps = vec![Step::Emit(Event::InitDone)];
                steps.extend(self.settle(stored));
                steps
            }
            Event::Apply(ref o) | Event::Delete(ref o) => {
                let Some(namespace) = namespace_of(o) else {
                    return Vec::new();
                };
                if self.covered.contains(namespace) {
                    vec![Step::Emit(event)]
                } else {
                    if let Some(pending) = self.pending.get_mut(namespace) {
                        pending.held.push(event);
                    } else if !self.elsewhere.contains(namespace) {
                        self.elsewhere.insert(namespace.to_owned());
                    }
                    Vec::new()
                }
            }
        }
    }

    /// The list of `namespace` numbered `generation` answered `items`; `stored` is what the
    /// store holds of it (nothing, unless it was purged and came back meanwhile).
    pub(crate) fn listed(
        &mut self,
        namespace: &str,
        generation: u64,
        items: Vec<K>,
        stored: Vec<K>,
    ) -> Vec<Step<K>> {
        if !self.still_listing(namespace, generation) {
            return Vec::new();
        }
        let Some(pending) = self.pending.remove(namespace) else {
            return Vec::new();
        };
        let names: BTreeSet<&str> = items
            .iter()
            .filter_map(|o| o.meta().name.as_deref())
            .collect();
        let mut steps: Vec<Step<K>> = stored
            .into_iter()
            .filter(|o| o.meta().name.as_deref().is_none_or(|n| !names.contains(n)))
            .map(|o| Step::Emit(Event::Delete(o)))
            .collect();
        steps.extend(items.into_iter().map(|o| Step::Emit(Event::Apply(o))));
        // Held events are newer than nothing the list holds: replayed in order, the last
        // one of each object is what it is now.
        steps.extend(pending.held.into_iter().map(Step::Emit));
        self.covered.insert(namespace.to_owned());
        self.changes.push(Covering::Entered(namespace.to_owned()));
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(namespace: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([("v".to_owned(), value.to_owned())].into()),
            ..Default::default()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// The namespaces to list, and their numbers.
    fn lists(steps: &[Step<ConfigMap>]) -> Vec<(String, u64)> {
        steps
            .iter()
            .map(|s| match s {
                Step::List {
                    namespace,
                    generation,
                } => (namespace.clone(), *generation),
                other => panic!("not a list: {other:?}"),
            })
            .collect()
    }

    fn nothing(_: &str) -> Vec<ConfigMap> {
        Vec::new()
    }

    /// What a store would hold after the emitted events (the reflector's rules).
    #[derive(Default)]
    struct Store {
        objects: BTreeMap<(String, String), String>,
        buffer: Option<BTreeMap<(String, String), String>>,
    }

    impl Store {
        fn key(o: &ConfigMap) -> (String, String) {
            (
                o.metadata.namespace.clone().unwrap(),
                o.metadata.name.clone().unwrap(),
            )
        }
        fn value(o: &ConfigMap) -> String {
            o.data.as_ref().unwrap()["v"].clone()
        }
        fn apply(&mut self, steps: Vec<Step<ConfigMap>>) -> Vec<Step<ConfigMap>> {
            let mut others = Vec::new();
            for step in steps {
                match step {
                    Step::Emit(Event::Apply(o)) => {
                        self.objects.insert(Self::key(&o), Self::value(&o));
                    }
                    Step::Emit(Event::Delete(o)) => {
                        self.objects.remove(&Self::key(&o));
                    }
                    Step::Emit(Event::Init) => self.buffer = Some(BTreeMap::new()),
                    Step::Emit(Event::InitApply(o)) => {
                        self.buffer
                            .as_mut()
                            .unwrap()
                            .insert(Self::key(&o), Self::value(&o));
                    }
                    Step::Emit(Event::InitDone) => self.objects = self.buffer.take().unwrap(),
                    other => others.push(other),
                }
            }
            others
        }
        fn of(&self, namespace: &str) -> Vec<ConfigMap> {
            self.objects
                .iter()
                .filter(|((n, _), _)| n == namespace)
                .map(|((n, name), v)| cm(n, name, v))
                .collect()
        }
        fn namespaces(&self) -> BTreeSet<String> {
            self.objects.keys().map(|(n, _)| n.clone()).collect()
        }
    }

    /// The first list keeps what is in scope, and only that.
    fn listed_once(scope: &[&str], objects: &[ConfigMap]) -> (Scoping<ConfigMap>, Store) {
        let mut s = Scoping::new(set(scope));
        assert!(s.relisting());
        let mut store = Store::default();
        store.apply(s.watched(Event::Init, nothing));
        for o in objects {
            store.apply(s.watched(Event::InitApply(o.clone()), nothing));
        }
        let rest = store.apply(s.watched(Event::InitDone, nothing));
        assert!(rest.is_empty());
        (s, store)
    }

    #[test]
    fn only_namespaces_in_scope_are_kept() {
        let (mut s, mut store) =
            listed_once(&["shop"], &[cm("shop", "a", "1"), cm("other", "b", "1")]);
        assert_eq!(store.namespaces(), set(&["shop"]));
        assert_eq!(s.covered(), &set(&["shop"]));
        // Changes elsewhere are dropped, in scope kept.
        store.apply(s.watched(Event::Apply(cm("other", "c", "2")), nothing));
        store.apply(s.watched(Event::Apply(cm("shop", "a", "2")), nothing));
        assert_eq!(store.namespaces(), set(&["shop"]));
        assert_eq!(store.objects[&("shop".into(), "a".into())], "2");
    }

    #[test]
    fn a_namespace_that_enters_is_listed_and_what_the_watch_said_meanwhile_wins() {
        let (mut s, mut store) = listed_once(&["shop"], &[cm("blog", "a", "older")]);
        assert_eq!(s.take_changes(), vec![Covering::Now(set(&["shop"]))]);
        let steps = s.rescope(set(&["shop", "blog"]), |n| store.of(n));
        assert_eq!(lists(&steps), vec![("blog".to_owned(), 1)]);
        // Not covered until listed: nothing may be decided from the store for it.
        assert!(!s.covered().contains("blog"));
        // While the list is out: "a" changes, "gone" is deleted.
        store.apply(s.watched(Event::Apply(cm("blog", "a", "new")), nothing));
        store.apply(s.watched(Event::Delete(cm("blog", "gone", "x")), nothing));
        assert!(store.of("blog").is_empty(), "held back until the list");
        // The list was taken before both changes.
        let rest = store.apply(s.listed(
            "blog",
            1,
            vec![
                cm("blog", "a", "old"),
                cm("blog", "gone", "x"),
                cm("blog", "b", "1"),
            ],
            store.of("blog"),
        ));
        assert!(rest.is_empty());
        assert!(s.covered().contains("blog"));
        assert_eq!(
            s.take_changes(),
            vec![Covering::Entered("blog".into())],
            "readers are told of it once"
        );
        let values: Vec<String> = store.of("blog").iter().map(Store::value).collect();
        assert_eq!(
            values,
            vec!["new", "1"],
            "a as the watch said last; gone deleted"
        );
    }

    #[test]
    fn a_namespace_never_seen_holding_an_object_enters_without_a_list() {
        let (mut s, mut store) = listed_once(&["shop"], &[cm("blog", "a", "1")]);
        // "fresh" had nothing: covered at once, nothing to list.
        let steps = s.rescope(set(&["shop", "fresh"]), |n| store.of(n));
        assert!(steps.is_empty(), "{steps:?}");
        assert!(s.covered().contains("fresh"));
        // What is made there next comes through the watch, and is kept.
        store.apply(s.watched(Event::Apply(cm("fresh", "new", "1")), nothing));
        assert_eq!(store.of("fresh").len(), 1);
        // Something was seen in "later" while it was out of scope: it is listed.
        store.apply(s.watched(Event::Apply(cm("later", "x", "1")), nothing));
        let steps = s.rescope(set(&["shop", "fresh", "later"]), |n| store.of(n));
        assert_eq!(lists(&steps), vec![("later".to_owned(), 1)]);
        // One that leaves holding objects is listed when it comes back.
        store.apply(s.rescope(set(&["shop", "later"]), |n| store.of(n)));
        assert!(store.of("fresh").is_empty());
        let steps = s.rescope(set(&["shop", "later", "fresh"]), |n| store.of(n));
        assert_eq!(lists(&steps), vec![("fresh".to_owned(), 2)]);
    }

    #[test]
    fn a_namespace_that_leaves_is_purged_and_its_list_if_out_is_ignored() {
        let (mut s, mut store) = listed_once(
            &["shop", "blog"],
            &[cm("blog", "a", "1"), cm("news", "x", "0")],
        );
        s.take_changes();
        store.apply(s.rescope(set(&["shop", "news"]), |n| store.of(n)));
        assert_eq!(s.take_changes(), vec![Covering::Left("blog".into())]);
        assert!(store.of("blog").is_empty());
        assert_eq!(s.covered(), &set(&["shop"]));
        // "news" leaves before its list answers: the answer is dropped.
        store.apply(s.rescope(set(&["shop"]), |n| store.of(n)));
        assert!(!s.still_listing("news", 1));
        assert!(
            store
                .apply(s.listed("news", 1, vec![cm("news", "x", "1")], vec![]))
                .is_empty()
        );
        assert!(store.of("news").is_empty());
        assert!(!s.covered().contains("news"));
        // Back in scope: a new list, numbered anew (an old answer cannot be taken for it).
        let steps = s.rescope(set(&["shop", "news"]), |n| store.of(n));
        assert_eq!(lists(&steps), vec![("news".to_owned(), 2)]);
        assert!(s.listed("news", 1, vec![], vec![]).is_empty());
        assert!(s.still_listing("news", 2));
    }

    #[test]
    fn many_namespaces_at_once_re_list_the_whole_watch() {
        let many: Vec<String> = (0..=RELIST_ABOVE).map(|i| format!("ns-{i}")).collect();
        let mut objects = vec![cm("shop", "a", "1")];
        objects.extend(many.iter().map(|n| cm(n, "b", "0")));
        let (mut s, mut store) = listed_once(&["shop"], &objects);
        let mut wanted = set(&["shop"]);
        wanted.extend(many.iter().cloned());
        let steps = s.rescope(wanted.clone(), |n| store.of(n));
        assert!(matches!(steps.as_slice(), [Step::Relist]), "{steps:?}");
        assert!(s.relisting());
        // The re-list keeps the scope as it is when it begins.
        store.apply(s.watched(Event::Init, nothing));
        // Still readable while it lists.
        assert_eq!(store.of("shop").len(), 1);
        // Scope changes meanwhile wait for its end.
        wanted.insert("late".into());
        assert!(s.rescope(wanted.clone(), |n| store.of(n)).is_empty());
        store.apply(s.watched(Event::InitApply(cm("shop", "a", "2")), nothing));
        store.apply(s.watched(Event::InitApply(cm("ns-3", "b", "1")), nothing));
        store.apply(s.watched(Event::InitApply(cm("late", "c", "1")), nothing));
        store.apply(s.watched(Event::InitApply(cm("outside", "d", "1")), nothing));
        let steps = s.watched(Event::InitDone, |n| store.of(n));
        let rest = store.apply(steps);
        assert_eq!(store.namespaces(), set(&["ns-3", "shop"]));
        assert!(s.covered().contains("ns-0") && !s.covered().contains("late"));
        // "late" entered during the re-list: listed on its own after it.
        assert_eq!(lists(&rest), vec![("late".to_owned(), 1)]);
    }

    #[test]
    fn a_watch_that_re_lists_by_itself_takes_over_namespaces_being_listed() {
        let (mut s, mut store) = listed_once(&["shop"], &[]);
        store.apply(s.rescope(set(&["shop", "blog"]), |n| store.of(n)));
        // The watch fell out (410 Gone, say) and lists again, with blog in scope.
        store.apply(s.watched(Event::Init, nothing));
        store.apply(s.watched(Event::InitApply(cm("blog", "a", "1")), nothing));
        assert!(store.apply(s.watched(Event::InitDone, nothing)).is_empty());
        assert!(s.covered().contains("blog"));
        // blog's own list answers late: ignored.
        assert!(!s.still_listing("blog", 1));
        assert!(s.listed("blog", 1, vec![], store.of("blog")).is_empty());
        assert_eq!(store.of("blog").len(), 1);
    }
}
