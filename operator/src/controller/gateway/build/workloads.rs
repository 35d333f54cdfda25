//! The pods of a Gateway: the `<gw>-signaling` Deployment and the `<gw>-media` StatefulSet,
//! their pod templates (image, command, environment, ports, probes, drain timing, security
//! context), the network-mode specifics of the media pods (Pod, HostNetwork, SR-IOV), and the
//! user's `podOverrides` merged on top.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tandem_api::gateway::{
    ExposureType, MediaUpdateType, NetworkMode, PodResources, PodScheduling, QosClass, Spread,
};

use super::access::DATAPLANE_SUFFIX;
use super::network::network_name;
use super::services::protocol;
use super::{
    Blueprint, BuildError, GRACE_MARGIN_SECONDS, MEDIA_ADMIN_PORT, NG_PORT, PRE_STOP_SLEEP_SECONDS,
    SIGNALING_ADMIN_PORT, TLS_MOUNT_DIR, merge_pod_template,
};
use crate::labels::{self, Component};

/// Seconds a new pod must stay ready before a rollout moves on, so that a pod failing just
/// after start-up stops the rollout before another working pod drains.
pub const MIN_READY_SECONDS: i32 = 10;
/// Name of the signaling container.
pub const SIGNALING_CONTAINER: &str = "signaling-pod";
/// Name of the media container.
pub const MEDIA_CONTAINER: &str = "media-pod";
/// Where the binaries live in the image.
const BIN_DIR: &str = "/usr/local/bin";
/// The pods' user and group: the image's non-root user.
const RUN_AS: i64 = 65532;
/// Pod annotation Multus reads to attach extra networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Signaling pod annotation holding the Gateway's advertised address rules: the pods read
/// them when they start, so a change of the rules must change the template to roll them.
pub const ADVERTISED_ADDRESSES_ANNOTATION: &str = "voice.tandem.dev/advertised-addresses";
/// Pod annotation Multus writes with every attached interface and its addresses.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// Where the downward API volume carrying the network status is mounted (media pods on
/// SR-IOV, signaling pods on a secondary network).
pub const PODINFO_DIR: &str = "/etc/podinfo";
const PODINFO_VOLUME: &str = "podinfo";
const NETWORK_STATUS_FILE: &str = "network-status";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// What a pod needs to learn its address on the Multus network `attachment`: the downward-API
/// volume holding its network-status annotation, the mount, and the variables naming the file
/// and the network (`<namespace>/<name>`, as Multus writes it).
fn network_status_wiring(
    blueprint: &Blueprint<'_>,
    attachment: &str,
) -> (Volume, VolumeMount, [EnvVar; 2]) {
    let volume = Volume {
        name: PODINFO_VOLUME.to_owned(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: NETWORK_STATUS_FILE.to_owned(),
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{NETWORK_STATUS_ANNOTATION}']"),
                }),
                ..DownwardAPIVolumeFile::default()
            }]),
            ..DownwardAPIVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: PODINFO_VOLUME.to_owned(),
        mount_path: PODINFO_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let env = [
        env(
            "TANDEM_NETWORK_STATUS_FILE",
            format!("{PODINFO_DIR}/{NETWORK_STATUS_FILE}"),
        ),
        env(
            "TANDEM_NETWORK_NAME",
            network_name(blueprint.namespace, attachment),
        ),
    ];
    (volume, mount, env)
}

fn container_port(name: &str, port: u16, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some(protocol.to_owned()),
        ..ContainerPort::default()
    }
}

fn admin_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// What both containers share: image, probes on the `admin` port, the pre-stop pause and a
/// restricted security context.
fn base_container(blueprint: &Blueprint<'_>, name: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(blueprint.settings.dataplane_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec![format!("{BIN_DIR}/{name}")]),
        readiness_probe: Some(admin_probe("/readyz", 5, 2)),
        liveness_probe: Some(admin_probe("/livez", 10, 3)),
        lifecycle: Some(Lifecycle {
            // Endpoints and load balancers take a moment to drop a terminating pod; the pod
            // keeps serving meanwhile and drains on the SIGTERM that follows.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// What both pod specs share: identity, drain timing and the pod security context.
fn base_pod_spec(blueprint: &Blueprint<'_>, container: Container) -> PodSpec {
    PodSpec {
        service_account_name: Some(blueprint.child_name(DATAPLANE_SUFFIX)),
        termination_grace_period_seconds: Some(
            i64::from(blueprint.spec.drain_timeout_seconds) + GRACE_MARGIN_SECONDS,
        ),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        ..PodSpec::default()
    }
}

/// Requests and limits from the Gateway: limits equal requests when Guaranteed; memory and
/// huge pages are always capped at their request.
fn resources(resources: &PodResources) -> ResourceRequirements {
    let mut requests = BTreeMap::from([
        ("cpu".to_owned(), Quantity(resources.cpu.clone())),
        ("memory".to_owned(), Quantity(resources.memory.clone())),
    ]);
    if let Some(pages) = &resources.hugepages {
        requests.insert(
            pages.page_size.resource_name().to_owned(),
            Quantity(pages.amount.clone()),
        );
    }
    let mut limits = requests.clone();
    if resources.qos_class == QosClass::Burstable {
        limits.remove("cpu");
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

/// Priority, node selection, tolerations, and spread across nodes and zones with a preferred
/// anti-affinity between replicas.
fn schedule(
    blueprint: &Blueprint<'_>,
    component: Component,
    scheduling: &PodScheduling,
    spec: &mut PodSpec,
) {
    spec.priority_class_name = scheduling.priority_class_name.clone();
    if !scheduling.node_selector.is_empty() {
        spec.node_selector = Some(scheduling.node_selector.clone());
    }
    if !scheduling.tolerations.is_empty() {
        spec.tolerations = Some(scheduling.tolerations.clone());
    }
    let node_policy = match scheduling.spread {
        Spread::Preferred => "ScheduleAnyway",
        Spread::Required => "DoNotSchedule",
    };
    spec.topology_spread_constraints = Some(
        [
            ("kubernetes.io/hostname", node_policy),
            ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ]
        .into_iter()
        .map(|(key, policy)| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_owned(),
            when_unsatisfiable: policy.to_owned(),
            label_selector: Some(selector(blueprint, component)),
            ..TopologySpreadConstraint::default()
        })
        .collect(),
    );
    if spec.affinity.is_none() {
        spec.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(selector(blueprint, component)),
                            topology_key: "kubernetes.io/hostname".to_owned(),
                            ..PodAffinityTerm::default()
                        },
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        });
    }
}

fn template(
    blueprint: &Blueprint<'_>,
    component: Component,
    annotations: Option<BTreeMap<String, String>>,
    spec: PodSpec,
) -> Result<PodTemplateSpec, BuildError> {
    let generated = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(blueprint.labels(component)),
            annotations,
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    };
    let overrides = blueprint
        .spec
        .pod_overrides
        .as_ref()
        .and_then(|o| match component {
            Component::Signaling => o.signaling.as_ref(),
            Component::Media => o.media.as_ref(),
        });
    match overrides {
        None => Ok(generated),
        Some(overlay) => merge_pod_template(
            &generated,
            overlay,
            &labels::selector(blueprint.name, component),
        )
        .map_err(|source| BuildError::PodOverride {
            component: component.as_str(),
            source,
        }),
    }
}

fn selector(blueprint: &Blueprint<'_>, component: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels::selector(blueprint.name, component)),
        match_expressions: None,
    }
}

fn signaling_template(blueprint: &Blueprint<'_>) -> Result<PodTemplateSpec, BuildError> {
    let signaling = &blueprint.spec.signaling;
    let mut container = base_container(blueprint, SIGNALING_CONTAINER);
    container.args = Some(vec![
        "--config-source".to_owned(),
        "kubernetes".to_owned(),
        "--gateway".to_owned(),
        blueprint.name.to_owned(),
    ]);
    container.env = Some(vec![
        env_field("TANDEM_NAMESPACE", "metadata.namespace"),
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_IP", "status.podIP"),
        env(
            "TANDEM_BIND_ADDRESS",
            signaling
                .bind_address
                .map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string()),
        ),
        env(
            "TANDEM_ADMIN_LISTEN",
            format!("0.0.0.0:{SIGNALING_ADMIN_PORT}"),
        ),
        env("TANDEM_MEDIA_SERVICE", blueprint.media_service_host()),
    ]);
    // Without an advertised address rule, a fixed load-balancer address is what callers see;
    // peers inside the cluster reach each pod on its own IP, which also keeps their dialogs on
    // it. (NodePort needs a rule; on a secondary network each pod reads its own address.)
    let advertise = match (
        signaling.exposure.type_,
        signaling.exposure.load_balancer_ip,
    ) {
        _ if !signaling.advertised_addresses.is_empty() => None,
        (ExposureType::LoadBalancer, Some(ip)) => Some(ip.to_string()),
        (ExposureType::ClusterIp, _) => Some("$(POD_IP)".to_owned()),
        _ => None,
    };
    if let (Some(env_vars), Some(address)) = (container.env.as_mut(), advertise) {
        env_vars.push(env("TANDEM_ADVERTISE_ADDRESS", address));
    }
    let mut ports: Vec<ContainerPort> = signaling
        .listeners
        .iter()
        .map(|l| container_port(&l.name, l.port, protocol(l.transport)))
        .collect();
    ports.push(container_port("admin", SIGNALING_ADMIN_PORT, "TCP"));
    container.ports = Some(ports);

    // TLS and WSS listeners read their certificate from the listener's Secret, mounted
    // read-only (the data-plane role grants no access to Secrets through the API) where
    // `--tls-dir` tells the pod; the kubelet updates the files when the Secret changes, and the
    // pod reloads them.
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for listener in &signaling.listeners {
        let Some(secret) = &listener.tls_secret_ref else {
            continue;
        };
        let volume = format!("tls-{}", listener.name);
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        let dir = format!("{TLS_MOUNT_DIR}/{}", listener.name);
        if let Some(args) = container.args.as_mut() {
            args.extend(["--tls-dir".to_owned(), format!("{}={dir}", listener.name)]);
        }
        mounts.push(VolumeMount {
            name: volume,
            mount_path: dir,
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    // On a secondary network each pod advertises its own address there, read from its Multus
    // network status, so every request of a dialog comes back to the pod that holds it.
    let mut annotations: Option<BTreeMap<String, String>> = None;
    if !signaling.advertised_addresses.is_empty() {
        let rules = serde_json::to_string(&signaling.advertised_addresses)
            .map_err(BuildError::AdvertisedAddresses)?;
        annotations = Some(BTreeMap::from([(
            ADVERTISED_ADDRESSES_ANNOTATION.to_owned(),
            rules,
        )]));
    }
    if let (ExposureType::SecondaryNetwork, Some(attachment)) = (
        signaling.exposure.type_,
        &signaling.exposure.network_attachment,
    ) {
        let (volume, mount, network_env) = network_status_wiring(blueprint, attachment);
        volumes.push(volume);
        mounts.push(mount);
        if let Some(env_vars) = container.env.as_mut() {
            env_vars.extend(network_env);
        }
        annotations
            .get_or_insert_default()
            .insert(NETWORKS_ANNOTATION.to_owned(), attachment.clone());
    }
    if !mounts.is_empty() {
        container.volume_mounts = Some(mounts);
    }
    container.resources = Some(resources(&signaling.resources));
    let mut spec = base_pod_spec(blueprint, container);
    if !volumes.is_empty() {
        spec.volumes = Some(volumes);
    }
    schedule(
        blueprint,
        Component::Signaling,
        &signaling.scheduling,
        &mut spec,
    );
    template(blueprint, Component::Signaling, annotations, spec)
}

fn media_template(blueprint: &Blueprint<'_>) -> Result<PodTemplateSpec, BuildError> {
    let media = &blueprint.spec.media;
    let mut container = base_container(blueprint, MEDIA_CONTAINER);
    let range = media.rtp_port_range;
    let mut env_vars = vec![
        env("TANDEM_NG_LISTEN", format!("0.0.0.0:{NG_PORT}")),
        env("TANDEM_ADMIN_LISTEN", format!("0.0.0.0:{MEDIA_ADMIN_PORT}")),
        env("TANDEM_RTP_PORTS", format!("{}-{}", range.min, range.max)),
        env(
            "TANDEM_DRAIN_TIMEOUT_SECONDS",
            blueprint.spec.drain_timeout_seconds.to_string(),
        ),
        env_field("POD_IP", "status.podIP"),
    ];
    if let Some(transcoding) = &media.transcoding {
        let codecs: Vec<&str> = transcoding
            .codecs
            .iter()
            .map(|c| c.encoding_name())
            .collect();
        env_vars.push(env("TANDEM_TRANSCODE_CODECS", codecs.join(",")));
    }
    container.ports = Some(vec![
        container_port("ng", NG_PORT, "UDP"),
        container_port("admin", MEDIA_ADMIN_PORT, "TCP"),
    ]);

    container.resources = Some(resources(&media.resources));
    let mut annotations = None;
    let mut volumes = None;
    let mut host_network = None;
    let mut dns_policy = None;
    let mut affinity = None;
    match (media.network.mode, &media.network.sriov) {
        (NetworkMode::Sriov, Some(sriov)) => {
            let (volume, mount, network_env) =
                network_status_wiring(blueprint, &sriov.network_attachment);
            env_vars.extend(network_env);
            annotations = Some(BTreeMap::from([(
                NETWORKS_ANNOTATION.to_owned(),
                sriov.network_attachment.clone(),
            )]));
            // The device plugin hands out one virtual function per pod; extended resources
            // need equal requests and limits.
            if let Some(requirements) = container.resources.as_mut() {
                for map in [&mut requirements.requests, &mut requirements.limits] {
                    map.get_or_insert_with(BTreeMap::new)
                        .insert(sriov.resource_name.clone(), Quantity("1".to_owned()));
                }
            }
            container.volume_mounts = Some(vec![mount]);
            volumes = Some(vec![volume]);
        }
        (NetworkMode::HostNetwork, _) => {
            env_vars.push(env("TANDEM_RTP_ADDRESS", "$(POD_IP)"));
            host_network = Some(true);
            dns_policy = Some("ClusterFirstWithHostNet".to_owned());
            // Two media pods on one node would fight over the node's ng and RTP ports.
            affinity = Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![
                        PodAffinityTerm {
                            label_selector: Some(selector(blueprint, Component::Media)),
                            topology_key: "kubernetes.io/hostname".to_owned(),
                            ..PodAffinityTerm::default()
                        },
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            });
        }
        // Pod mode, and SRIOV without its block (refused by validation before build).
        (NetworkMode::Pod | NetworkMode::Sriov, _) => {
            env_vars.push(env("TANDEM_RTP_ADDRESS", "$(POD_IP)"));
        }
    }
    container.env = Some(env_vars);

    let mut spec = base_pod_spec(blueprint, container);
    spec.volumes = volumes;
    spec.host_network = host_network;
    spec.dns_policy = dns_policy;
    spec.affinity = affinity;
    schedule(blueprint, Component::Media, &media.scheduling, &mut spec);
    template(blueprint, Component::Media, annotations, spec)
}

pub(super) fn signaling(blueprint: &Blueprint<'_>) -> Result<Deployment, BuildError> {
    Ok(Deployment {
        metadata: blueprint.meta(
            blueprint.child_name("signaling"),
            blueprint.labels(Component::Signaling),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(blueprint.spec.signaling.replicas),
            selector: selector(blueprint, Component::Signaling),
            // A new pod must be ready before an old one starts draining, so a rollout never
            // lowers call capacity.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            min_ready_seconds: Some(MIN_READY_SECONDS),
            template: signaling_template(blueprint)?,
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

pub(super) fn media(blueprint: &Blueprint<'_>) -> Result<StatefulSet, BuildError> {
    let name = blueprint.child_name("media");
    let strategy = &blueprint.spec.media.update_strategy;
    Ok(StatefulSet {
        metadata: blueprint.meta(name.clone(), blueprint.labels(Component::Media)),
        spec: Some(StatefulSetSpec {
            // With autoscaling the HorizontalPodAutoscaler owns the replica count; leaving it
            // out of the applied configuration keeps the operator from fighting it.
            replicas: blueprint.spec.media.fixed_replicas(),
            service_name: Some(name),
            selector: selector(blueprint, Component::Media),
            // Media pods hold no state that needs ordered start-up; scaling is faster without.
            pod_management_policy: Some("Parallel".to_owned()),
            // A pod is replaced only after it has drained (its termination grace period spans
            // the drain timeout) and the next one only once the replacement has been ready
            // for a while; a partition holds the lower ordinals back for a canary.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(strategy.type_.as_str().to_owned()),
                rolling_update: (strategy.type_ == MediaUpdateType::RollingUpdate).then_some(
                    RollingUpdateStatefulSetStrategy {
                        partition: Some(strategy.partition),
                        max_unavailable: None,
                    },
                ),
            }),
            min_ready_seconds: Some(MIN_READY_SECONDS),
            template: media_template(blueprint)?,
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}
