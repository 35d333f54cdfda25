//! The media pod's configuration: command line flags with `TANDEM_*` environment fallbacks,
//! gathered in one [`Config`]. In Kubernetes the operator sets only environment variables; on
//! the local platform, settings the Gateway resource owns (RTP port range, drain timeout)
//! come from it when a config directory and Gateway name are given and nothing overrides them.
//!
//! The RTP address is `TANDEM_RTP_ADDRESS`, else `POD_IP` (Pod and HostNetwork modes), or,
//! for SR-IOV, the named attachment's address in the Multus network status (see
//! [`tandem_api::network_status`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;

use clap::Parser;
use tandem_runtime::logging::LogFormat;

use crate::transcode::CodecSet;

/// Command line and environment of the media pod.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "media-pod",
    version,
    about = "Tandem media pod: RTP/RTCP relay controlled by the rtpengine ng protocol"
)]
pub struct Config {
    /// UDP address of the ng control server.
    #[arg(long, env = "TANDEM_NG_LISTEN", default_value = "127.0.0.1:2223")]
    pub ng_listen: SocketAddr,
    /// Address the RTP/RTCP sockets bind; also advertised in SDP unless overridden. Defaults
    /// to the pod's IP (POD_IP), else 127.0.0.1.
    #[arg(long, env = "TANDEM_RTP_ADDRESS")]
    pub rtp_address: Option<IpAddr>,
    /// The pod's IP from the downward API; the RTP address when no other is given.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<IpAddr>,
    /// SR-IOV: a downward-API file holding the pod's Multus network-status annotation; RTP
    /// binds to (and advertises) the first IPv4 address of --network-name in it.
    #[arg(long, env = "TANDEM_NETWORK_STATUS_FILE")]
    pub network_status_file: Option<PathBuf>,
    /// SR-IOV: the attachment to take the RTP address from, as `<namespace>/<name>`.
    #[arg(long, env = "TANDEM_NETWORK_NAME")]
    pub network_name: Option<String>,
    /// How long to wait for the network-status file to name the attachment (the annotation
    /// can reach the downward-API file after the container starts).
    #[arg(long, env = "TANDEM_NETWORK_STATUS_WAIT_SECONDS", default_value_t = 60)]
    pub network_status_wait_seconds: u64,
    /// Network interface the RTP/RTCP sockets are bound to (SO_BINDTODEVICE), e.g. the
    /// SR-IOV virtual function; the address they bind and advertise is set separately.
    #[arg(long, env = "TANDEM_RTP_INTERFACE")]
    pub rtp_interface: Option<String>,
    /// Relay worker threads, each owning a shard of the calls and their sockets; 0 means one
    /// per available core.
    #[arg(long, env = "TANDEM_MEDIA_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Address written into rewritten SDP (c=, a=rtcp, o=), e.g. a public or SR-IOV address.
    #[arg(long, env = "TANDEM_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<IpAddr>,
    /// Inclusive UDP port range for media, as `first-last`; RTP takes even ports, RTCP the
    /// odd port above. Defaults to the Gateway's `media.rtpPortRange`, else 20000-29999.
    #[arg(long, env = "TANDEM_RTP_PORTS")]
    pub rtp_ports: Option<PortRange>,
    /// Directory of Gateway, Trunk and RoutePlan YAML files (read once at start).
    #[arg(long, env = "TANDEM_CONFIG_DIR", requires = "gateway")]
    pub config_dir: Option<PathBuf>,
    /// The Gateway this pod serves, in the config directory.
    #[arg(long, env = "TANDEM_GATEWAY", requires = "config_dir")]
    pub gateway: Option<String>,
    /// Admin HTTP address (/metrics, /livez, /readyz).
    #[arg(long, env = "TANDEM_ADMIN_LISTEN", default_value = "127.0.0.1:9102")]
    pub admin_listen: SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "TANDEM_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds of silence after which a call whose media flows both ways is deleted (as
    /// rtpengine's `timeout`); each packet and each offer/answer restarts the clock. 0 turns
    /// the media timeout off.
    #[arg(
        long = "media-timeout",
        alias = "media-timeout-seconds",
        env = "TANDEM_MEDIA_TIMEOUT",
        default_value_t = 60
    )]
    pub media_timeout_seconds: u64,
    /// Seconds of silence after which a call on hold (sendonly, recvonly, inactive, zero
    /// address) or still waiting for its answer is deleted (rtpengine's `silent-timeout`). 0
    /// turns it off.
    #[arg(
        long = "hold-timeout",
        alias = "hold-timeout-seconds",
        env = "TANDEM_HOLD_TIMEOUT",
        default_value_t = 3600
    )]
    pub hold_timeout_seconds: u64,
    /// Directory call recordings (pcap, with a `.meta` file each) are written to, e.g. a
    /// volume; without it `start recording` and `record call` are refused.
    #[arg(long, env = "TANDEM_RECORDING_DIR")]
    pub recording_dir: Option<PathBuf>,
    /// Milliseconds a latched media source must be silent before a packet from a new source
    /// address re-latches the stream (NAT rebinding).
    #[arg(long, env = "TANDEM_LATCH_HOLDOFF_MS", default_value_t = 1000)]
    pub latch_holdoff_ms: u64,
    /// After SIGTERM, the longest wait for calls in progress to end before stopping. Defaults
    /// to the Gateway's `drainTimeoutSeconds`, else 3600.
    #[arg(long, env = "TANDEM_DRAIN_TIMEOUT_SECONDS")]
    pub drain_timeout_seconds: Option<u64>,
    /// Codecs the relay may transcode between, comma-separated (`PCMU,PCMA,G722,opus`); an
    /// empty list turns transcoding off. Defaults to the Gateway's
    /// `media.transcoding.codecs`, else off.
    #[arg(long, env = "TANDEM_TRANSCODE_CODECS")]
    pub transcode_codecs: Option<CodecSet>,
}

/// Where the RTP address comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaAddress {
    /// A known address (flag, TANDEM_RTP_ADDRESS, POD_IP, or the loopback default).
    Fixed(IpAddr),
    /// The first IPv4 address of an SR-IOV attachment in the Multus network status.
    NetworkStatus {
        /// The downward-API file.
        file: PathBuf,
        /// `<namespace>/<attachment>`.
        network: String,
    },
}

/// Settings resolved from flags, environment and the Gateway resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The media port range.
    pub port_range: PortRange,
    /// The longest drain.
    pub drain_timeout: Duration,
    /// The codecs the relay may transcode between.
    pub transcodable: CodecSet,
}

/// The drain timeout without a flag or Gateway (the Gateway's own default).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);

impl Config {
    /// Where to take the RTP address from: the network status (SR-IOV), else
    /// `--rtp-address`, else `POD_IP`, else 127.0.0.1.
    pub fn media_address(&self) -> MediaAddress {
        if let (Some(file), Some(network)) = (&self.network_status_file, &self.network_name) {
            return MediaAddress::NetworkStatus {
                file: file.clone(),
                network: network.clone(),
            };
        }
        MediaAddress::Fixed(
            self.rtp_address
                .or(self.pod_ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        )
    }

    /// The number of relay workers: as configured, else one per available core.
    pub fn workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }

    /// The address to advertise in SDP when RTP binds `rtp_address`.
    pub fn advertised_address(&self, rtp_address: IpAddr) -> Result<IpAddr, ConfigError> {
        let advertise = self.advertise_address.unwrap_or(rtp_address);
        if advertise.is_unspecified() {
            return Err(ConfigError::UnspecifiedAdvertise(rtp_address));
        }
        Ok(advertise)
    }

    /// The media timeout, `None` when off.
    pub fn media_timeout(&self) -> Option<Duration> {
        (self.media_timeout_seconds > 0).then(|| Duration::from_secs(self.media_timeout_seconds))
    }

    /// The hold timeout, `None` when off.
    pub fn hold_timeout(&self) -> Option<Duration> {
        (self.hold_timeout_seconds > 0).then(|| Duration::from_secs(self.hold_timeout_seconds))
    }

    /// How long a latched source must be silent before another may take over.
    pub fn latch_holdoff(&self) -> Duration {
        Duration::from_millis(self.latch_holdoff_ms)
    }

    /// How long to wait for the network status to name the attachment.
    pub fn network_status_wait(&self) -> Duration {
        Duration::from_secs(self.network_status_wait_seconds)
    }

    /// The port range and drain timeout: flags and environment first, else the Gateway's
    /// (when a config directory and Gateway are given), else the defaults.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let gateway = match (&self.config_dir, &self.gateway) {
            (Some(dir), Some(name))
                if self.rtp_ports.is_none()
                    || self.drain_timeout_seconds.is_none()
                    || self.transcode_codecs.is_none() =>
            {
                let set = tandem_runtime::config_dir::load(dir)?;
                let gateway = set.for_gateway(name).with_context(|| {
                    format!(
                        "configuration in {} has no Gateway named {name:?}",
                        dir.display()
                    )
                })?;
                let spec = &gateway.gateway.spec;
                let range = spec.media.rtp_port_range;
                let port_range = PortRange::new(range.min, range.max).with_context(|| {
                    format!("Gateway {name:?} has an unusable media.rtpPortRange")
                })?;
                let transcodable = match &spec.media.transcoding {
                    Some(t) => t
                        .codecs
                        .iter()
                        .map(|c| c.encoding_name())
                        .collect::<Vec<_>>()
                        .join(",")
                        .parse::<CodecSet>()
                        .map_err(anyhow::Error::msg)
                        .with_context(|| {
                            format!("Gateway {name:?} has an unusable media.transcoding")
                        })?,
                    None => CodecSet::NONE,
                };
                Some((
                    port_range,
                    u64::from(spec.drain_timeout_seconds),
                    transcodable,
                ))
            }
            _ => None,
        };
        let port_range = self
            .rtp_ports
            .or(gateway.map(|(range, _, _)| range))
            .unwrap_or(PortRange::DEFAULT);
        let drain_timeout = self
            .drain_timeout_seconds
            .or(gateway.map(|(_, seconds, _)| seconds))
            .map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs);
        let transcodable = self
            .transcode_codecs
            .or(gateway.map(|(_, _, codecs)| codecs))
            .unwrap_or_default();
        Ok(Settings {
            port_range,
            drain_timeout,
            transcodable,
        })
    }

    /// Checks combinations that flags alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.network_status_file, &self.network_name) {
            (Some(_), None) => return Err(ConfigError::NetworkNameMissing),
            (None, Some(_)) => return Err(ConfigError::NetworkStatusFileMissing),
            (Some(_), Some(_)) if self.rtp_address.is_some() => {
                return Err(ConfigError::TwoMediaAddresses);
            }
            _ => {}
        }
        if let MediaAddress::Fixed(ip) = self.media_address() {
            self.advertised_address(ip)?;
        }
        Ok(())
    }
}

/// Configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A wildcard bind address with nothing to advertise.
    #[error("--rtp-address {0} is a wildcard and cannot go into SDP; set --advertise-address")]
    UnspecifiedAdvertise(IpAddr),
    /// A network-status file without the network to look for.
    #[error(
        "TANDEM_NETWORK_STATUS_FILE (--network-status-file) needs TANDEM_NETWORK_NAME \
         (--network-name): which attachment carries media?"
    )]
    NetworkNameMissing,
    /// A network name without the file to look it up in.
    #[error(
        "TANDEM_NETWORK_NAME (--network-name) needs TANDEM_NETWORK_STATUS_FILE \
         (--network-status-file) to find the attachment's address in"
    )]
    NetworkStatusFileMissing,
    /// Both a fixed address and an SR-IOV network given.
    #[error(
        "TANDEM_RTP_ADDRESS (--rtp-address) and TANDEM_NETWORK_STATUS_FILE \
         (--network-status-file) both choose the RTP address; give one"
    )]
    TwoMediaAddresses,
}

/// An inclusive UDP port range holding at least one even/odd RTP/RTCP pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// 20000-29999, the range of the local platform and the Gateway default.
    pub const DEFAULT: PortRange = PortRange {
        first: 20000,
        last: 29999,
    };

    /// A range from `first` to `last` inclusive.
    pub fn new(first: u16, last: u16) -> Result<Self, PortRangeError> {
        if first == 0 {
            return Err(PortRangeError::ZeroPort);
        }
        if first > last {
            return Err(PortRangeError::Reversed { first, last });
        }
        let range = Self { first, last };
        if range.pairs().next().is_none() {
            return Err(PortRangeError::NoPair { first, last });
        }
        Ok(range)
    }

    /// The RTP ports (even) whose RTCP port (odd, one above) is also in the range.
    pub fn pairs(&self) -> impl Iterator<Item = u16> + use<> {
        let start = u32::from(self.first).div_ceil(2) * 2;
        let last = u32::from(self.last);
        (start..last)
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Why a port range is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not of the form `first-last`.
    #[error("expected a port range like 20000-29999")]
    Syntax,
    /// Port 0 is not a real port.
    #[error("port range cannot include port 0")]
    ZeroPort,
    /// `first` above `last`.
    #[error("port range {first}-{last} is reversed")]
    Reversed {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// No even port with its odd neighbour inside.
    #[error("port range {first}-{last} holds no even/odd RTP/RTCP pair")]
    NoPair {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = s.trim().split_once('-').ok_or(PortRangeError::Syntax)?;
        let first = first
            .trim()
            .parse::<u16>()
            .map_err(|_| PortRangeError::Syntax)?;
        let last = last
            .trim()
            .parse::<u16>()
            .map_err(|_| PortRangeError::Syntax)?;
        PortRange::new(first, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_pairs() {
        let r: PortRange = "20000-20005".parse().unwrap();
        assert_eq!(r.pairs().collect::<Vec<_>>(), vec![20000, 20002, 20004]);
        let odd: PortRange = "20001-20004".parse().unwrap();
        assert_eq!(odd.pairs().collect::<Vec<_>>(), vec![20002]);
        let top: PortRange = "65534-65535".parse().unwrap();
        assert_eq!(top.pairs().collect::<Vec<_>>(), vec![65534]);
        assert_eq!(r.to_string(), "20000-20005");
    }

    #[test]
    fn port_range_errors() {
        assert_eq!("20000".parse::<PortRange>(), Err(PortRangeError::Syntax));
        assert_eq!("a-b".parse::<PortRange>(), Err(PortRangeError::Syntax));
        assert_eq!("0-10".parse::<PortRange>(), Err(PortRangeError::ZeroPort));
        assert_eq!(
            "30000-20000".parse::<PortRange>(),
            Err(PortRangeError::Reversed {
                first: 30000,
                last: 20000
            })
        );
        assert_eq!(
            "20001-20002".parse::<PortRange>(),
            Err(PortRangeError::NoPair {
                first: 20001,
                last: 20002
            })
        );
        assert_eq!(
            "20000-20000".parse::<PortRange>(),
            Err(PortRangeError::NoPair {
                first: 20000,
                last: 20000
            })
        );
    }

    #[test]
    fn defaults_and_validation() {
        let c = Config::try_parse_from(["media-pod"]).unwrap();
        assert_eq!(c.ng_listen, "127.0.0.1:2223".parse().unwrap());
        let settings = c.settings().unwrap();
        assert_eq!(settings.port_range, PortRange::new(20000, 29999).unwrap());
        assert_eq!(settings.drain_timeout, Duration::from_secs(3600));
        assert_eq!(c.admin_listen, "127.0.0.1:9102".parse().unwrap());
        assert_eq!(c.media_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(c.hold_timeout(), Some(Duration::from_secs(3600)));
        let off =
            Config::try_parse_from(["media-pod", "--media-timeout", "0", "--hold-timeout", "7"])
                .unwrap();
        assert_eq!(off.media_timeout(), None);
        assert_eq!(off.hold_timeout(), Some(Duration::from_secs(7)));
        assert_eq!(
            c.media_address(),
            MediaAddress::Fixed("127.0.0.1".parse().unwrap())
        );
        assert!(c.validate().is_ok());
        let wild = Config::try_parse_from(["media-pod", "--rtp-address", "0.0.0.0"]).unwrap();
        assert!(wild.validate().is_err());
        let adv = Config::try_parse_from([
            "media-pod",
            "--rtp-address",
            "0.0.0.0",
            "--advertise-address",
            "198.51.100.7",
        ])
        .unwrap();
        assert!(adv.validate().is_ok());
        assert_eq!(
            adv.advertised_address("0.0.0.0".parse().unwrap()).unwrap(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert!(Config::try_parse_from(["media-pod", "--rtp-ports", "9-5"]).is_err());
        assert!(Config::try_parse_from(["media-pod", "--gateway", "gw"]).is_err());
        assert!(Config::try_parse_from(["media-pod", "--log-format", "xml"]).is_err());
        let drain = Config::try_parse_from(["media-pod", "--drain-timeout-seconds", "45"]).unwrap();
        assert_eq!(
            drain.settings().unwrap().drain_timeout,
            Duration::from_secs(45)
        );
    }

    #[test]
    fn media_address_sources_in_order() {
        let pod = Config::try_parse_from(["media-pod", "--pod-ip", "10.1.2.3"]).unwrap();
        assert_eq!(
            pod.media_address(),
            MediaAddress::Fixed("10.1.2.3".parse().unwrap())
        );
        let both = Config::try_parse_from([
            "media-pod",
            "--pod-ip",
            "10.1.2.3",
            "--rtp-address",
            "10.9.9.9",
        ])
        .unwrap();
        assert_eq!(
            both.media_address(),
            MediaAddress::Fixed("10.9.9.9".parse().unwrap())
        );
        let sriov = Config::try_parse_from([
            "media-pod",
            "--pod-ip",
            "10.1.2.3",
            "--network-status-file",
            "/etc/podinfo/network-status",
            "--network-name",
            "voice/sriov-media",
        ])
        .unwrap();
        assert!(sriov.validate().is_ok());
        assert_eq!(
            sriov.media_address(),
            MediaAddress::NetworkStatus {
                file: "/etc/podinfo/network-status".into(),
                network: "voice/sriov-media".into(),
            }
        );
    }

    #[test]
    fn incomplete_or_contradictory_sriov_settings_are_errors() {
        let no_name = Config::try_parse_from(["media-pod", "--network-status-file", "/x"]).unwrap();
        assert!(matches!(
            no_name.validate(),
            Err(ConfigError::NetworkNameMissing)
        ));
        let no_file = Config::try_parse_from(["media-pod", "--network-name", "ns/a"]).unwrap();
        let err = no_file.validate().unwrap_err();
        assert!(
            err.to_string().contains("TANDEM_NETWORK_STATUS_FILE"),
            "{err}"
        );
        let two = Config::try_parse_from([
            "media-pod",
            "--network-status-file",
            "/x",
            "--network-name",
            "ns/a",
            "--rtp-address",
            "10.0.0.1",
        ])
        .unwrap();
        assert!(matches!(
            two.validate(),
            Err(ConfigError::TwoMediaAddresses)
        ));
    }

    fn write_gateway(dir: &std::path::Path, min: u16, max: u16) {
        write_gateway_with(dir, min, max, "");
    }

    fn write_gateway_with(dir: &std::path::Path, min: u16, max: u16, media_extra: &str) {
        let yaml = format!(
            r#"apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata:
  name: edge
spec:
  drainTimeoutSeconds: 120
  signaling:
    replicas: 1
    listeners:
      - name: sip-udp
        transport: UDP
        port: 5060
  media:
    replicas: 1
    rtpPortRange:
      min: {min}
      max: {max}
    network:
      mode: Pod
{media_extra}"#
        );
        std::fs::write(dir.join("gateway.yaml"), yaml).unwrap();
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("media-pod-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn transcoding_codecs_come_from_the_flag_else_the_gateway() {
        let dir = scratch_dir("transcoding");
        write_gateway_with(
            &dir,
            40000,
            40099,
            "    transcoding:\n      codecs: [PCMU, opus]\n",
        );
        let dir_arg = dir.to_str().unwrap();
        let c = Config::try_parse_from(["media-pod", "--config-dir", dir_arg, "--gateway", "edge"])
            .unwrap();
        assert_eq!(c.settings().unwrap().transcodable.to_string(), "PCMU,opus");
        let c = Config::try_parse_from([
            "media-pod",
            "--config-dir",
            dir_arg,
            "--gateway",
            "edge",
            "--transcode-codecs",
            "",
        ])
        .unwrap();
        assert!(c.settings().unwrap().transcodable.is_empty());
        let c = Config::try_parse_from(["media-pod"]).unwrap();
        assert!(c.settings().unwrap().transcodable.is_empty());
        assert!(Config::try_parse_from(["media-pod", "--transcode-codecs", "G729"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gateway_settings_apply_unless_overridden() {
        let dir = scratch_dir("gw");
        write_gateway(&dir, 40000, 40099);
        let dir_arg = dir.to_str().unwrap();
        let c = Config::try_parse_from(["media-pod", "--config-dir", dir_arg, "--gateway", "edge"])
            .unwrap();
        let settings = c.settings().unwrap();
        assert_eq!(settings.port_range, PortRange::new(40000, 40099).unwrap());
        assert_eq!(settings.drain_timeout, Duration::from_secs(120));
        let c = Config::try_parse_from([
            "media-pod",
            "--config-dir",
            dir_arg,
            "--gateway",
            "edge",
            "--rtp-ports",
            "50000-50009",
            "--drain-timeout-seconds",
            "7",
        ])
        .unwrap();
        let settings = c.settings().unwrap();
        assert_eq!(settings.port_range, PortRange::new(50000, 50009).unwrap());
        assert_eq!(settings.drain_timeout, Duration::from_secs(7));
        let missing =
            Config::try_parse_from(["media-pod", "--config-dir", dir_arg, "--gateway", "other"])
                .unwrap();
        let err = missing.settings().unwrap_err();
        assert!(
            format!("{err:#}").contains("no Gateway named \"other\""),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
