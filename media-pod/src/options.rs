//! What an ng request asks of the relay beyond its command: the flags and keys Kamailio's and
//! OpenSIPS's `rtpengine` modules send, read once into [`Options`], with a warning naming each
//! one this relay does not act on. Pure: the session table applies the options.
//!
//! Flags are compared as rtpengine compares them (case-insensitive, space = hyphen), and the
//! flag spellings of keys (`replace-origin`, `rtcp-mux-demux`, `SDES-off`, `codec-strip-PCMA`,
//! `RTP/AVP`) mean the same as the keys.

use std::net::{IpAddr, SocketAddr};

use tandem_ng::{Command, Ice, NgError, Replace, Request};

use crate::srtp::SdesPolicy;

/// How the `o=` line of an SDP sent on is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginRewrite {
    /// The relay's address instead of the sender's (`origin`, `origin-full`).
    pub address: bool,
    /// `-` instead of the sender's username (`origin`, `origin-full`, `username`): the party
    /// receiving the SDP learns nothing of the sender's host or user.
    pub username: bool,
    /// The relay's own session id (`origin-full`).
    pub session_id: bool,
    /// The relay's own session version, increased when the SDP sent changes (`origin-full`,
    /// `SDP version`).
    pub version: bool,
    /// Increase the version with every SDP sent (`force-increment-sdp-ver`).
    pub force_increment: bool,
}

/// The `rtcp-mux` handling asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpMux {
    /// Offer multiplexing to the receiver even if the sender did not (`offer`).
    pub offer: bool,
    /// Do not pass a multiplexing offer on, but accept it from the sender (`demux`).
    pub demux: bool,
    /// Refuse multiplexing (`reject`).
    pub reject: bool,
}

/// When the SDP sent on advertises the relay as ICE-lite agent and only candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IceAdvertise {
    /// Never: ICE attributes are only removed (`ICE=remove`, and no `ICE` key).
    #[default]
    Never,
    /// Always (`ICE=force`).
    Always,
    /// When the sender's SDP had ICE (`ICE=default`).
    IfOffered,
}

/// Whether a codec option names RFC 4733 events (`telephone-event`, any clock rate).
fn is_events(codec: &str) -> bool {
    codec
        .split('/')
        .next()
        .is_some_and(|name| name.trim().eq_ignore_ascii_case("telephone-event"))
}

/// One codec selector: a payload type number, or `name[/clock rate[/channels]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecSelector(pub String);

/// Codec manipulations of an offer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodecPlan {
    /// Codecs removed from the SDP sent on (`strip`, and `mask`, the same without a
    /// transcoder).
    pub strip: Vec<CodecSelector>,
    /// Remove every codec but the ones listed under `except` and `offer`.
    pub strip_all: bool,
    /// Codecs kept by `strip all` (`except`).
    pub except: Vec<CodecSelector>,
    /// Codecs kept and moved to the front, in this order (`offer`).
    pub offer: Vec<CodecSelector>,
    /// Codecs added for the receiver when it would otherwise share no codec with the sender,
    /// the relay transcoding between them (`transcode`).
    pub transcode: Vec<CodecSelector>,
    /// `mask` of `telephone-event`: the receiver is offered no events, and the relay plays the
    /// sender's events to it as tones (and sends the tones it hears back as events).
    pub mask_events: bool,
    /// `transcode` of `telephone-event`: the receiver is offered events the sender did not
    /// offer, and the relay converts between them and the sender's tones.
    pub transcode_events: bool,
}

impl CodecPlan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.strip.is_empty()
            && !self.strip_all
            && self.offer.is_empty()
            && self.transcode.is_empty()
            && !self.transcode_events
    }

    /// Whether the offer asks the relay to convert between events and tones.
    pub fn converts_events(&self) -> bool {
        self.mask_events || self.transcode_events
    }
}

/// Everything an offer or answer asks for, beyond the SDP itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The address replacing the SDP's (`media address`, or `received from` with
    /// `SIP source address`).
    pub address_override: Option<IpAddr>,
    /// The sender is never latched (`asymmetric`).
    pub asymmetric: bool,
    /// Packets from anywhere but the sender's learned address are dropped (`strict source`).
    pub strict_source: bool,
    /// `o=` handling.
    pub origin: OriginRewrite,
    /// The protocol of the `m=` lines sent on (`transport protocol`): plain RTP, or
    /// SDES-keyed SRTP (`RTP/SAVP`, `RTP/SAVPF`).
    pub transport_protocol: Option<String>,
    /// In an answer, pass the answerer's protocol to the offerer (`transport protocol:
    /// accept`).
    pub accept_protocol: bool,
    /// `rtcp-mux` handling.
    pub rtcp_mux: RtcpMux,
    /// The SDES suites that may be used (`SDES` options).
    pub sdes: SdesPolicy,
    /// When to offer the relay to the receiver as an ICE-lite agent.
    pub ice: IceAdvertise,
    /// Codec manipulations (offers only).
    pub codecs: CodecPlan,
    /// The sender's label (`label`, `from-label`, `set-label`).
    pub label: Option<String>,
    /// The call's metadata.
    pub metadata: Option<String>,
    /// Where the call's DTMF digits are reported (`dtmf-log-dest`).
    pub dtmf_log_dest: Option<SocketAddr>,
    /// Start recording the call (`record call: yes` or `on`, or the `record call` flag).
    pub record_call: bool,
    /// Mark the SDP sent on, and leave alone an SDP that carries this pod's mark
    /// (`loop protect`).
    pub loop_protect: bool,
    /// `inject DTMF`: the streams go through the transcoder (even with a codec in common),
    /// so that `play DTMF` can play tones into them.
    pub inject_dtmf: bool,
    /// What the request asked for that is not acted on, one phrase each.
    pub warnings: Vec<String>,
}

/// Protocols the relay translates between: plain RTP and SDES-keyed SRTP.
const RTP_PROTOCOLS: [&str; 4] = ["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"];
/// DTLS-keyed SRTP, not supported yet.
const DTLS_PROTOCOLS: [&str; 2] = ["UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"];
/// The one logical interface's name, for `direction`.
pub const INTERFACE: &str = "default";

/// Reads an offer's or answer's options. `advertise` is the relay's address, to check
/// `address family` against.
pub fn for_negotiation(request: &Request, advertise: IpAddr) -> Result<Options, NgError> {
    let is_offer = request.command == Command::Offer;
    let mut o = Options {
        label: request.label.clone().or_else(|| request.set_label.clone()),
        metadata: request.metadata.clone(),
        ..Options::default()
    };
    if let Some(dest) = &request.dtmf_log_dest {
        o.dtmf_log_dest = Some(dest.parse().map_err(|_| NgError::InvalidValue {
            key: "dtmf-log-dest",
            reason: "not an IP address and port",
        })?);
    }
    o.record_call = request
        .record_call
        .as_deref()
        .is_some_and(|r| matches!(normalize(r).as_str(), "yes" | "on"));
    let mut warn = |w: String| o.warnings.push(w);

    let mut trust_address = false;
    let mut sip_source = false;
    let mut transport_flags = Vec::new();
    let mut replace = request.replace.clone();
    let mut rtcp_mux = request.rtcp_mux.clone();
    let mut sdes = request.sdes.clone();
    for flag in &request.flags {
        let name = normalize(flag);
        match name.as_str() {
            "trust-address" => trust_address = true,
            "sip-source-address" => sip_source = true,
            "symmetric" | "port-latching" => o.asymmetric = false,
            "asymmetric" => o.asymmetric = true,
            "strict-source" => o.strict_source = true,
            "record-call" => o.record_call = true,
            "loop-protect" => o.loop_protect = true,
            "inject-dtmf" if is_offer => o.inject_dtmf = true,
            _ if name.starts_with("codec-") => {} // read by codec_operations()
            _ if name.starts_with("replace-") => {
                replace.push(Replace::parse(&flag["replace-".len()..]));
            }
            _ if name.starts_with("rtcp-mux-") => {
                rtcp_mux.push(flag["rtcp-mux-".len()..].to_owned());
            }
            _ if name.starts_with("sdes-") => sdes.push(flag["SDES-".len()..].to_owned()),
            _ if RTP_PROTOCOLS
                .iter()
                .chain(DTLS_PROTOCOLS.iter())
                .any(|p| p.eq_ignore_ascii_case(flag)) =>
            {
                transport_flags.push(flag.to_ascii_uppercase());
            }
            _ => warn(format!("flag '{flag}'")),
        }
    }
    if request.has_flag("asymmetric") && request.has_flag("symmetric") {
        warn("flags 'symmetric' and 'asymmetric' together (asymmetric used)".to_owned());
        o.asymmetric = true;
    }

    // Addresses: `media address` wins, then `SIP source address` unless `trust address`.
    if let Some(address) = &request.media_address {
        o.address_override = Some(address.parse().map_err(|_| NgError::InvalidValue {
            key: "media-address",
            reason: "not an IP address",
        })?);
    } else if sip_source && !trust_address {
        match &request.received_from {
            Some(rf) => {
                o.address_override =
                    Some(rf.address.parse().map_err(|_| NgError::InvalidValue {
                        key: "received-from",
                        reason: "not an IP address",
                    })?);
            }
            None => warn("flag 'SIP source address' without 'received from'".to_owned()),
        }
    }

    for item in &replace {
        match item {
            Replace::Origin => {
                o.origin.address = true;
                o.origin.username = true;
            }
            Replace::OriginFull => {
                o.origin = OriginRewrite {
                    address: true,
                    username: true,
                    session_id: true,
                    version: true,
                    force_increment: o.origin.force_increment,
                };
            }
            Replace::Username => o.origin.username = true,
            Replace::SdpVersion => o.origin.version = true,
            Replace::ForceIncrementSdpVersion => o.origin.force_increment = true,
            // The session-level c= is always the relay's when anything is anchored.
            Replace::SessionConnection => {}
            Replace::SessionName | Replace::ZeroAddress | Replace::Other(_) => {
                warn(format!("replace '{}'", item.as_str()));
            }
        }
    }

    match &request.ice {
        None | Some(Ice::Remove) => {}
        Some(Ice::Force) => o.ice = IceAdvertise::Always,
        Some(Ice::Default) => o.ice = IceAdvertise::IfOffered,
        Some(mode) => warn(format!(
            "ICE '{}' (the relay is an ICE-lite agent only: ICE attributes removed)",
            mode.as_str()
        )),
    }

    let protocol = request
        .transport_protocol
        .clone()
        .or_else(|| transport_flags.pop());
    match protocol {
        None => {}
        Some(p) if p.eq_ignore_ascii_case("accept") && !is_offer => o.accept_protocol = true,
        Some(p) => match RTP_PROTOCOLS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(&p))
        {
            Some(known) => o.transport_protocol = Some((*known).to_owned()),
            None if DTLS_PROTOCOLS
                .iter()
                .any(|known| known.eq_ignore_ascii_case(&p)) =>
            {
                warn(format!(
                    "transport protocol '{p}' (DTLS-SRTP is not supported yet: protocol left as sent)"
                ));
            }
            None => warn(format!("transport protocol '{p}'")),
        },
    }

    for mode in &rtcp_mux {
        match normalize(mode).as_str() {
            "offer" => o.rtcp_mux.offer = true,
            "demux" => o.rtcp_mux.demux = true,
            "reject" => o.rtcp_mux.reject = true,
            // Going along with the sender is what the relay does by default.
            "accept" => {}
            _ => warn(format!("rtcp-mux '{mode}'")),
        }
    }
    let mut sdes_policy = SdesPolicy::default();
    for option in &sdes {
        if !sdes_policy.apply(option) {
            warn(format!("SDES '{option}'"));
        }
    }

    let codecs = request.codec_operations();
    if !codecs.is_empty() && !is_offer {
        warn("codec options (they apply to offers only)".to_owned());
    } else {
        for (operation, codec) in codecs {
            let selector = CodecSelector(codec.clone());
            let all = codec.eq_ignore_ascii_case("all") || codec.eq_ignore_ascii_case("full");
            match operation.as_str() {
                "strip" | "mask" if all => o.codecs.strip_all = true,
                "mask" if is_events(&codec) => {
                    o.codecs.mask_events = true;
                    o.codecs.strip.push(selector);
                }
                "strip" | "mask" => o.codecs.strip.push(selector),
                "transcode" if is_events(&codec) => o.codecs.transcode_events = true,
                "except" => o.codecs.except.push(selector),
                "offer" => o.codecs.offer.push(selector),
                "transcode"
                    if tandem_codec::CodecKind::from_name(
                        codec.split('/').next().unwrap_or_default(),
                    )
                    .is_some() =>
                {
                    o.codecs.transcode.push(selector);
                }
                "transcode" => warn(format!(
                    "codec transcode '{codec}' (the relay transcodes between PCMU, PCMA, G722 and opus)"
                )),
                _ => warn(format!("codec {operation} '{codec}'")),
            }
        }
    }

    if let Some(family) = &request.address_family {
        let ours = if advertise.is_ipv4() { "IP4" } else { "IP6" };
        if !family.eq_ignore_ascii_case(ours) {
            warn(format!(
                "address family '{family}' (this relay has {ours} addresses only)"
            ));
        }
    }
    for interface in &request.direction {
        if !interface.eq_ignore_ascii_case(INTERFACE) {
            warn(format!(
                "direction '{interface}' (one interface, '{INTERFACE}', serves both sides)"
            ));
        }
    }
    if request.to_label.is_some() {
        warn("to-label (it selects parties in blocking commands only)".to_owned());
    }
    if request.delete_delay.is_some() {
        warn("delete delay (it applies to delete only)".to_owned());
    }
    if request.all.is_some() {
        warn("all (it applies to blocking commands only)".to_owned());
    }
    warn_unknown_keys(request, &mut o.warnings);
    o.sdes = sdes_policy;
    Ok(o)
}

/// The warnings for a command other than offer/answer: unknown keys and flags that do not
/// apply. `applicable` are the flags the command acts on.
pub fn for_command(request: &Request, applicable: &[&str]) -> Vec<String> {
    let mut warnings = Vec::new();
    for flag in &request.flags {
        let name = normalize(flag);
        if !applicable.iter().any(|a| normalize(a) == name) {
            warnings.push(format!("flag '{flag}'"));
        }
    }
    warn_unknown_keys(request, &mut warnings);
    warnings
}

fn warn_unknown_keys(request: &Request, warnings: &mut Vec<String>) {
    for key in &request.unknown_keys {
        warnings.push(format!("key '{key}'"));
    }
}

/// The reply `warning` for `warnings`, if any.
pub fn warning_text(warnings: &[String]) -> Option<String> {
    (!warnings.is_empty()).then(|| format!("Not supported, ignored: {}", warnings.join("; ")))
}

/// Folds ASCII case and maps spaces to hyphens, as ng flag comparison does.
fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "203.0.113.1";

    fn offer() -> Request {
        Request::offer("c", "f", "v=0\r\n")
    }

    fn read(request: &Request) -> Options {
        for_negotiation(request, RELAY.parse().unwrap()).unwrap()
    }

    #[test]
    fn supported_flags_give_no_warning() {
        let mut r = offer()
            .with_flag("trust-address")
            .with_flag("loop-protect")
            .with_flag("symmetric")
            .with_flag("strict source")
            .with_flag("replace-origin")
            .with_flag("codec-strip-PCMA")
            .with_flag("RTP/AVP")
            .with_replace(Replace::SessionConnection)
            .with_ice(Ice::Remove)
            .with_received_from("IP4", "192.0.2.1");
        r.rtcp_mux = vec!["demux".into(), "accept".into()];
        r.address_family = Some("IP4".into());
        r.direction = vec!["default".into(), "default".into()];
        r.label = Some("caller".into());
        r.metadata = Some("k:v".into());
        r.record_call = Some("no".into());
        let o = read(&r);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        assert!(o.strict_source && !o.asymmetric && o.loop_protect);
        assert!(o.origin.address && o.origin.username && !o.origin.version);
        assert_eq!(o.transport_protocol.as_deref(), Some("RTP/AVP"));
        assert!(o.rtcp_mux.demux && !o.rtcp_mux.reject);
        assert_eq!(o.codecs.strip, vec![CodecSelector("PCMA".into())]);
        assert_eq!(o.label.as_deref(), Some("caller"));
        assert_eq!(o.address_override, None, "trust address keeps the SDP's");
    }

    #[test]
    fn srtp_protocols_and_sdes_options_are_taken() {
        let mut r = offer()
            .with_flag("RTP/SAVPF")
            .with_flag("SDES-no-AES_CM_128_HMAC_SHA1_32");
        r.sdes = vec!["only-AES_CM_128_HMAC_SHA1_80".into()];
        let o = read(&r);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        assert_eq!(o.transport_protocol.as_deref(), Some("RTP/SAVPF"));
        assert!(o.sdes.allows(tandem_srtp::Suite::AesCm128HmacSha1_80));
        assert!(!o.sdes.allows(tandem_srtp::Suite::AesCm128HmacSha1_32));
        assert!(!o.sdes.allows(tandem_srtp::Suite::AeadAes128Gcm));
        r.transport_protocol = Some("rtp/savp".into());
        assert_eq!(read(&r).transport_protocol.as_deref(), Some("RTP/SAVP"));
    }

    #[test]
    fn everything_not_acted_on_is_named() {
        let mut r = offer()
            .with_flag("media-handover")
            .with_flag("SDES-pad")
            .with_ice(Ice::ForceRelay)
            .with_replace(Replace::SessionName);
        r.codec = vec![("consume".into(), "G729".into())];
        r.transport_protocol = Some("UDP/TLS/RTP/SAVP".into());
        r.address_family = Some("IP6".into());
        r.direction = vec!["priv".into(), "pub".into()];
        r.rtcp_mux = vec!["require".into()];
        r.unknown_keys = vec!["frobnicate".into()];
        let o = read(&r);
        let text = warning_text(&o.warnings).unwrap();
        for needle in [
            "flag 'media-handover'",
            "SDES 'pad'",
            "ICE 'force-relay'",
            "replace 'session-name'",
            "codec consume 'G729'",
            "transport protocol 'UDP/TLS/RTP/SAVP'",
            "address family 'IP6'",
            "direction 'priv'",
            "direction 'pub'",
            "rtcp-mux 'require'",
            "key 'frobnicate'",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(text.starts_with("Not supported, ignored: "));
        assert_eq!(o.transport_protocol, None);
    }

    #[test]
    fn addresses_follow_rtpengine_precedence() {
        let sip = offer()
            .with_flag("SIP source address")
            .with_received_from("IP4", "198.51.100.7");
        assert_eq!(
            read(&sip).address_override,
            Some("198.51.100.7".parse().unwrap())
        );
        let trusted = sip.clone().with_flag("trust address");
        assert_eq!(read(&trusted).address_override, None);
        let mut media = sip.clone();
        media.media_address = Some("192.0.2.99".into());
        assert_eq!(
            read(&media).address_override,
            Some("192.0.2.99".parse().unwrap())
        );
        media.media_address = Some("nowhere".into());
        assert!(for_negotiation(&media, RELAY.parse().unwrap()).is_err());
    }

    #[test]
    fn origin_replacements() {
        let full = read(&offer().with_replace(Replace::OriginFull));
        assert_eq!(
            full.origin,
            OriginRewrite {
                address: true,
                username: true,
                session_id: true,
                version: true,
                force_increment: false
            }
        );
        let version = read(&offer().with_flag("replace-SDP-version"));
        assert!(version.origin.version && !version.origin.address);
        assert!(version.warnings.is_empty(), "{:?}", version.warnings);
    }

    #[test]
    fn codec_plan_and_answer_rules() {
        let mut r = offer();
        r.codec = vec![
            ("strip".into(), "all".into()),
            ("except".into(), "PCMU".into()),
            ("offer".into(), "G722".into()),
            ("mask".into(), "opus".into()),
            ("transcode".into(), "PCMA".into()),
        ];
        let o = read(&r);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        assert_eq!(o.codecs.transcode, vec![CodecSelector("PCMA".into())]);
        assert!(o.codecs.strip_all);
        assert_eq!(o.codecs.except, vec![CodecSelector("PCMU".into())]);
        assert_eq!(o.codecs.offer, vec![CodecSelector("G722".into())]);
        assert_eq!(o.codecs.strip, vec![CodecSelector("opus".into())]);
        let mut answer = Request::answer("c", "f", "t", "v=0\r\n");
        answer.codec = r.codec.clone();
        answer.transport_protocol = Some("accept".into());
        let o = read(&answer);
        assert!(o.codecs.is_empty());
        assert!(o.accept_protocol);
        assert_eq!(
            o.warnings,
            vec!["codec options (they apply to offers only)"]
        );
    }

    #[test]
    fn other_commands_warn_about_flags_that_do_not_apply() {
        let r = Request::delete("c", None)
            .with_flag("fatal")
            .with_flag("trust-address");
        assert_eq!(
            for_command(&r, &["fatal", "fast", "to-tag"]),
            vec!["flag 'trust-address'"]
        );
    }
}
