//! Dialog state from both sides, in-dialog requests, CSeq ordering and CANCEL.

use bytes::Bytes;
use tandem_sip::dialog::{Dialog, DialogError, InDialogError, cancel_for};
use tandem_sip::{CSeq, Method, SipMessage, Via, parse_datagram};

fn parse(text: &str) -> SipMessage {
    parse_datagram(Bytes::from(text.replace('\n', "\r\n"))).expect("valid message")
}

fn invite() -> SipMessage {
    parse(
        "INVITE sip:bob@b.example SIP/2.0\n\
Via: SIP/2.0/UDP a.example:5060;branch=z9hG4bK1\n\
Max-Forwards: 70\n\
Route: <sip:p1.example;lr>\n\
From: <sip:alice@a.example>;tag=ta\n\
To: <sip:bob@b.example>\n\
Call-ID: c1@a.example\n\
CSeq: 7 INVITE\n\
Contact: <sip:alice@10.0.0.1:5060>\n\
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\n\
Content-Length: 0\n\n",
    )
}

fn ok() -> SipMessage {
    parse(
        "SIP/2.0 200 OK\n\
Via: SIP/2.0/UDP a.example:5060;branch=z9hG4bK1\n\
From: <sip:alice@a.example>;tag=ta\n\
To: <sip:bob@b.example>;tag=tb\n\
Call-ID: c1@a.example\n\
CSeq: 7 INVITE\n\
Contact: <sip:bob@10.0.0.2:5070>\n\
Record-Route: <sip:p2.example;lr>, <sip:p1.example;lr>\n\
Content-Length: 0\n\n",
    )
}

fn via() -> Via {
    Via::new("UDP", "a.example", Some(5060), "z9hG4bK2")
}

#[test]
fn uac_bye_follows_target_and_reversed_record_route() {
    let mut dialog = Dialog::from_uac(&invite(), &ok()).expect("dialog");
    let bye = dialog.request(Method::Bye, &via());
    assert_eq!(
        bye.request_uri().map(|u| &u[..]),
        Some(&b"sip:bob@10.0.0.2:5070"[..])
    );
    let routes: Vec<String> = bye
        .routes()
        .expect("routes")
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(routes, ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
    assert_eq!(
        bye.cseq().expect("cseq"),
        CSeq {
            seq: 8,
            method: Method::Bye
        }
    );
    assert_eq!(bye.to().expect("to").tag(), Some(&b"tb"[..]));
    assert_eq!(bye.from().expect("from").tag(), Some(&b"ta"[..]));
    let ack = dialog.ack(7, &via());
    assert_eq!(
        ack.cseq().expect("cseq"),
        CSeq {
            seq: 7,
            method: Method::Ack
        }
    );
}

#[test]
fn uas_dialog_refuses_out_of_order_cseq() {
    let mut dialog = Dialog::from_uas(&invite(), "tb").expect("dialog");
    assert_eq!(dialog.local.tag(), Some(&b"tb"[..]));
    assert_eq!(
        dialog.remote_target,
        Bytes::from_static(b"sip:alice@10.0.0.1:5060")
    );
    let bye = CSeq {
        seq: 7,
        method: Method::Bye,
    };
    assert_eq!(
        dialog.accept_remote(&bye),
        Err(InDialogError::OutOfOrder {
            received: 7,
            last: 7
        })
    );
    assert_eq!(
        dialog.accept_remote(&CSeq {
            seq: 7,
            method: Method::Ack
        }),
        Ok(())
    );
    assert_eq!(
        dialog.accept_remote(&CSeq {
            seq: 8,
            method: Method::Bye
        }),
        Ok(())
    );
    let request = dialog.request(Method::Bye, &via());
    assert_eq!(request.cseq().expect("cseq").seq, 1);
}

#[test]
fn response_without_tag_forms_no_dialog() {
    let mut response = ok();
    response.headers.set("To", "<sip:bob@b.example>");
    assert_eq!(
        Dialog::from_uac(&invite(), &response),
        Err(DialogError::MissingRemoteTag)
    );
}

#[test]
fn cancel_copies_invite_identity() {
    let cancel = cancel_for(&invite()).expect("cancel");
    let original = invite();
    assert_eq!(cancel.request_uri(), original.request_uri());
    assert_eq!(
        cancel.top_via().expect("via"),
        original.top_via().expect("via")
    );
    assert_eq!(
        cancel.cseq().expect("cseq"),
        CSeq {
            seq: 7,
            method: Method::Cancel
        }
    );
    assert_eq!(
        cancel.call_id().expect("id"),
        original.call_id().expect("id")
    );
    assert_eq!(cancel.headers.get("Route"), original.headers.get("Route"));
}

#[test]
fn first_request_from_the_callee_sets_the_remote_cseq() {
    let mut dialog = Dialog::from_uac(&invite(), &ok()).expect("dialog");
    let info = CSeq {
        seq: 1,
        method: Method::Info,
    };
    assert_eq!(dialog.accept_remote(&info), Ok(()));
    assert_eq!(dialog.remote_seq, Some(1));
    assert!(dialog.accept_remote(&info).is_err());
}
