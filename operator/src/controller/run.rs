//! Runs the three controllers and the trunk report poller together until told to stop: their
//! watches (each scoped to one namespace when asked), the mappings that requeue Trunks and
//! RoutePlans when the objects they refer to change, reconcile metrics and the error policy
//! (an Event, a log line and a retry after a growing delay).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tandem_api::{Gateway, RoutePlan, Subscriber, Trunk};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::context::{Context, object_key};
use super::error::Error;
use super::{gateway, routeplan, subscriber, trunk};
use crate::labels;
use crate::trunk_report::poller::{Poller, Triggers};

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A future that completes when `stop` turns true (or its sender goes away).
pub fn stopped(mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync {
    let (done, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
        let _ = done.send(());
    });
    async move {
        let _ = wait.await;
    }
}

/// Runs a reconcile, recording its duration and result.
async fn instrumented<K, Fut>(
    kind: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, Error>
where
    K: Resource,
    Fut: Future<Output = Result<Action, Error>>,
{
    let key = object_key(
        kind,
        object.meta().namespace.as_deref(),
        object.meta().name.as_deref(),
    );
    // One span per reconcile, exported by OTLP when the process is configured for it.
    let span = tracing::info_span!(
        "reconcile",
        kind,
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        name = object.meta().name.as_deref().unwrap_or_default(),
    );
    let started = Instant::now();
    let result = reconcile(object, Arc::clone(&ctx)).instrument(span).await;
    ctx.metrics.reconciled(
        kind,
        result.as_ref().err().map(Error::metric_reason),
        started.elapsed(),
    );
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// What happens after a failed reconcile: a log line, a Warning Event and a retry after the
/// object's next backoff delay.
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |object, error, ctx| {
        let meta = object.meta();
        let key = object_key(kind, meta.namespace.as_deref(), meta.name.as_deref());
        let delay = ctx.backoff.failed(&key);
        tracing::warn!(
            kind,
            namespace = meta.namespace.as_deref().unwrap_or_default(),
            name = meta.name.as_deref().unwrap_or_default(),
            %error,
            retry_in = ?delay,
            "reconcile failed"
        );
        let reference = object.object_ref(&());
        let note = error.to_string();
        tokio::spawn(async move {
            ctx.event(
                &reference,
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                note,
            )
            .await;
        });
        Action::requeue(delay)
    }
}

fn log_outcome<K: Resource, E: std::fmt::Display>(
    kind: &'static str,
) -> impl Fn(Result<(ObjectRef<K>, Action), E>) -> futures::future::Ready<()> {
    move |outcome| {
        match outcome {
            Ok((object, action)) => tracing::debug!(kind, %object, ?action, "reconciled"),
            // Reconcile errors were logged by the error policy; these are queue and watch
            // errors, which the controller retries by itself.
            Err(error) => tracing::debug!(kind, %error, "controller event"),
        }
        futures::future::ready(())
    }
}

/// Runs every controller of the operator until `stop` turns true.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, stop: watch::Receiver<bool>) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (gateway_triggers, gateway_requests) = mpsc::unbounded();
    let (trunk_triggers, trunk_requests) = mpsc::unbounded();
    let children =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));

    let gateways = Controller::new(
        scoped::<DeserializeGuard<Gateway>>(&client, ns),
        watcher::Config::default(),
    )
    .owns(scoped::<Deployment>(&client, ns), children.clone())
    .owns(scoped::<StatefulSet>(&client, ns), children)
    .reconcile_on(gateway_requests)
    .graceful_shutdown_on(stopped(stop.clone()))
    .run(
        |object, ctx| instrumented(gateway::KIND, object, ctx, gateway::reconcile),
        error_policy(gateway::KIND),
        Arc::clone(&ctx),
    )
    .for_each(log_outcome(gateway::KIND));

    let trunk_controller = Controller::new(
        scoped::<DeserializeGuard<Trunk>>(&client, ns),
        watcher::Config::default(),
    );
    let trunk_store = trunk_controller.store();
    let trunks = trunk_controller
        .watches(
            scoped::<DeserializeGuard<Gateway>>(&client, ns),
            watcher::Config::default(),
            move |gateway| of_gateway(&trunk_store, &gateway),
        )
        .reconcile_on(trunk_requests)
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(
            |object, ctx| instrumented(trunk::KIND, object, ctx, trunk::reconcile),
            error_policy(trunk::KIND),
            Arc::clone(&ctx),
        )
        .for_each(log_outcome(trunk::KIND));

    let plan_controller = Controller::new(
        scoped::<DeserializeGuard<RoutePlan>>(&client, ns),
        watcher::Config::default(),
    );
    let plans_by_gateway = plan_controller.store();
    let plans_by_trunk = plan_controller.store();
    let plans = plan_controller
        .watches(
            scoped::<DeserializeGuard<Gateway>>(&client, ns),
            watcher::Config::default(),
            move |gateway| of_gateway(&plans_by_gateway, &gateway),
        )
        // A Trunk appearing, disappearing or moving to another Gateway changes the references
        // of every plan of its namespace that names it.
        .watches(
            scoped::<DeserializeGuard<Trunk>>(&client, ns),
            watcher::Config::default(),
            move |trunk| {
                let namespace = trunk.namespace();
                let name = trunk.name_any();
                plans_by_trunk
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == namespace
                            && p.0.as_ref().is_ok_and(|p| names_trunk(p, &name))
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(
            |object, ctx| instrumented(routeplan::KIND, object, ctx, routeplan::reconcile),
            error_policy(routeplan::KIND),
            Arc::clone(&ctx),
        )
        .for_each(log_outcome(routeplan::KIND));

    let subscriber_controller = Controller::new(
        scoped::<DeserializeGuard<Subscriber>>(&client, ns),
        watcher::Config::default(),
    );
    let subscriber_store = subscriber_controller.store();
    let subscribers = subscriber_controller
        .watches(
            scoped::<DeserializeGuard<Gateway>>(&client, ns),
            watcher::Config::default(),
            move |gateway| of_gateway(&subscriber_store, &gateway),
        )
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(
            |object, ctx| instrumented(subscriber::KIND, object, ctx, subscriber::reconcile),
            error_policy(subscriber::KIND),
            Arc::clone(&ctx),
        )
        .for_each(log_outcome(subscriber::KIND));

    let poller = Poller::new(
        client.clone(),
        namespace.clone(),
        Arc::clone(&ctx.reports),
        Triggers {
            gateways: gateway_triggers,
            trunks: trunk_triggers,
        },
    )
    .run(stopped(stop));

    tokio::join!(gateways, trunks, plans, subscribers, poller);
}

/// Whether `plan` names the Trunk `trunk` anywhere.
/// Objects that name their Gateway in `spec.gatewayRef`.
trait OfGateway {
    fn gateway_name(&self) -> &str;
}

impl OfGateway for Trunk {
    fn gateway_name(&self) -> &str {
        &self.spec.gateway_ref.name
    }
}

impl OfGateway for Subscriber {
    fn gateway_name(&self) -> &str {
        &self.spec.gateway_ref.name
    }
}

impl OfGateway for RoutePlan {
    fn gateway_name(&self) -> &str {
        &self.spec.gateway_ref.name
    }
}

/// The objects in `store` that belong to `gateway` (its namespace, a gatewayRef naming it), to
/// reconcile when the Gateway changes.
fn of_gateway<K>(
    store: &kube::runtime::reflector::Store<DeserializeGuard<K>>,
    gateway: &DeserializeGuard<Gateway>,
) -> Vec<ObjectRef<DeserializeGuard<K>>>
where
    K: Resource<DynamicType = ()> + OfGateway + Clone,
    DeserializeGuard<K>: Resource<DynamicType = ()>,
{
    let namespace = gateway.namespace();
    let name = gateway.name_any();
    store
        .state()
        .into_iter()
        .filter(|object| {
            object.namespace() == namespace
                && object.0.as_ref().is_ok_and(|o| o.gateway_name() == name)
        })
        .map(|object| ObjectRef::from_obj(&*object))
        .collect()
}

fn names_trunk(plan: &RoutePlan, trunk: &str) -> bool {
    plan.spec.inbound_trunks.iter().any(|t| t == trunk)
        || plan
            .spec
            .routes
            .iter()
            .flat_map(|r| &r.targets)
            .any(|t| t.trunk_ref.name == trunk)
}
