//! When a worker may act: only on the replica that leads, and only once the watches it
//! reads have listed (before, a store may be half-filled and another replica may be
//! acting). Every controller's reconciler is wrapped in [`when_active`], and reconciles
//! everything once on [`activation`].

use std::{future::Future, sync::Arc, time::Duration};

use futures::{
    StreamExt,
    future::{BoxFuture, Either},
};
use kube::runtime::controller::Action;
use tokio::sync::watch;

use kube::ResourceExt;

use crate::plumbing::{
    backoff::{self, Backoff},
    watches::Listed,
};

/// How long a watch may take to list before the wait is logged.
const LISTING_PATIENCE: Duration = Duration::from_secs(15);

/// A reconcile under way, which tells the backoff when it succeeds.
type Reconciling<E> = BoxFuture<'static, Result<Action, E>>;

/// What a reconciler does before it may act: nothing, until something changes.
type Idle<E> = futures::future::Ready<Result<Action, E>>;

/// A reconciler that does nothing until `active` (this replica leads and the watches the
/// controller reads have listed): before, the store may be half-filled and another replica
/// may be acting. A success of `worker`'s reconcile of an object starts its backoff over
/// (its error policy asks `backoff` how long to wait after a failure).
pub(crate) fn when_active<K, C, E, F, Fut>(
    active: watch::Receiver<bool>,
    (worker, backoff): (&'static str, Arc<Backoff>),
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<C>) -> Either<Reconciling<E>, Idle<E>>
where
    K: ResourceExt,
    F: Fn(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    move |object, ctx| {
        if *active.borrow() {
            let key = backoff::key(worker, &*object);
            let backoff = backoff.clone();
            let reconciled = reconcile(object, ctx);
            Either::Left(Box::pin(async move {
                let done = reconciled.await;
                if done.is_ok() {
                    backoff.succeeded(&key);
                }
                done
            }))
        } else {
            Either::Right(futures::future::ready(Ok(Action::await_change())))
        }
    }
}

/// Fires once, when `active` turns true: every controller then reconciles everything.
pub(crate) fn activation(
    mut active: watch::Receiver<bool>,
) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::once(async move { active.wait_for(|a| *a).await.is_ok() })
        .filter_map(|ok| futures::future::ready(ok.then_some(())))
}

/// Turns true once `leading` does and every watch in `needs` has listed (saying which one
/// it still waits for, every so often); stays true until `shutdown`.
pub(crate) fn gate(
    controller: &'static str,
    mut leading: watch::Receiver<bool>,
    needs: Vec<(&'static str, Listed)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> watch::Receiver<bool> {
    let (open, active) = watch::channel(false);
    tokio::spawn(async move {
        let ready = async {
            if leading.wait_for(|l| *l).await.is_err() {
                return false;
            }
            for (watch, listed) in &needs {
                loop {
                    tokio::select! {
                        ok = listed.wait() => {
                            if !ok {
                                return false;
                            }
                            break;
                        }
                        _ = tokio::time::sleep(LISTING_PATIENCE) => tracing::warn!(
                            controller, watch,
                            "still waiting for this watch to list; check the manager's permissions and the CRDs"
                        ),
                    }
                }
            }
            true
        };
        tokio::pin!(shutdown);
        let ready = tokio::select! {
            ready = ready => ready,
            _ = &mut shutdown => false,
        };
        if ready {
            tracing::info!(controller, "its watches have listed: reconciling");
            let _ = open.send(true);
            // A replica that stops leading reconciles nothing more at once (it is exiting,
            // and another may lead soon).
            tokio::select! {
                _ = &mut shutdown => {}
                _ = async { leading.wait_for(|l| !*l).await.is_ok() } => {
                    tracing::warn!(controller, "no longer leading: reconciling nothing more");
                    let _ = open.send(false);
                    shutdown.await;
                }
            }
            // Keep the sender until the end: the activation stream watches it.
        }
    });
    active
}
