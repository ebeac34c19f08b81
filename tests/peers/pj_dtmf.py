#!/usr/bin/env python3
"""pjsua2 caller for Switchboard's DTMF interop test.

Calls a SIP URI from 127.0.0.1 with a null sound device, offers telephone-event/8000 as the
given payload type (rewriting pjsua's own offer, whatever its build default), presses keys with
Call.dialDtmf (RFC 4733), hangs up, and prints one JSON line: whether the call was answered,
the negotiated codec and telephone-event payload types, and the keys sent.
"""

import argparse
import re
import sys

import pjsua2 as pj

import pjphone


def with_event_pt(sdp, pt):
    """The SDP with telephone-event/8000 as payload type `pt`; other telephone-event rates are
    dropped so the answer can only pick this one."""
    lines = sdp.replace("\r\n", "\n").strip("\n").split("\n")
    events = {}
    for line in lines:
        m = re.match(r"a=rtpmap:(\d+) telephone-event/(\d+)", line)
        if m:
            events[m.group(1)] = m.group(2)
    narrow = [old for old, rate in events.items() if rate == "8000"]
    if not narrow:
        raise SystemExit("pjsua offered no telephone-event/8000")
    out = []
    for line in lines:
        if line.startswith("m=audio"):
            head, fmts = line.split(" ")[:3], line.split(" ")[3:]
            if str(pt) in fmts and str(pt) not in events:
                raise SystemExit(f"payload type {pt} is taken by another codec: {line}")
            fmts = [str(pt) if f == narrow[0] else f for f in fmts if f not in events or f == narrow[0]]
            line = " ".join(head + fmts)
        m = re.match(r"a=(rtpmap|fmtp):(\d+)( .*)", line)
        if m and m.group(2) in events:
            if m.group(2) != narrow[0]:
                continue
            line = f"a={m.group(1)}:{pt}{m.group(3)}"
        out.append(line)
    return "\r\n".join(out) + "\r\n"


class Call(pjphone.TrackedCall):
    def __init__(self, acc, event_pt):
        super().__init__(acc)
        self.event_pt = event_pt

    def onCallSdpCreated(self, prm):
        prm.sdp.wholeSdp = with_event_pt(prm.sdp.wholeSdp, self.event_pt)

    def on_audio(self, media):
        # The null microphone into the call: the conference bridge then clocks the stream,
        # which is what sends queued DTMF.
        pj.Endpoint.instance().audDevManager().getCaptureDevMedia().startTransmit(media)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--call", required=True, help="SIP URI to call")
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--event-pt", type=int, default=120)
    ap.add_argument("--dtmf", required=True, help="keys to press, e.g. 15*#0")
    args = ap.parse_args()

    def press(call, result):
        si = call.getStreamInfo(0)
        result.update(tx_event_pt=si.audTxEventPt, rx_event_pt=si.audRxEventPt)
        # Let the greeting start, as a caller would, then press the keys.
        pjphone.pump(ep, 1.5)
        try:
            call.dialDtmf(args.dtmf)
            result["sent"] = args.dtmf
        except pj.Error as e:
            result["dtmf_error"] = e.info()
        # Each key: 160 ms tone plus the pause pjmedia leaves between queued keys.
        pjphone.pump(ep, 1.0 + 0.4 * len(args.dtmf))

    ep = pjphone.endpoint(pj.PJSIP_TRANSPORT_UDP)
    acc = pjphone.account(args.rtp_port)
    code = pjphone.run(ep, Call(acc, args.event_pt), args.call, press)
    del acc
    ep.libDestroy()
    return code


if __name__ == "__main__":
    sys.exit(main())
