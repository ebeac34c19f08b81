#!/usr/bin/env python3
"""pjsua2 caller for Switchboard's DTMF interop test.

Calls a SIP URI from 127.0.0.1 with a null sound device, offers telephone-event/8000 as the
given payload type (rewriting pjsua's own offer, whatever its build default), presses keys with
Call.dialDtmf (RFC 4733), hangs up, and prints one JSON line: whether the call was answered,
the negotiated codec and telephone-event payload types, and the keys sent.
"""

import argparse
import json
import re
import sys
import time

import pjsua2 as pj


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


class Call(pj.Call):
    def __init__(self, acc, event_pt):
        super().__init__(acc)
        self.event_pt = event_pt
        self.confirmed = False
        self.disconnected = False
        self.media_active = False
        self.status = None

    def onCallSdpCreated(self, prm):
        prm.sdp.wholeSdp = with_event_pt(prm.sdp.wholeSdp, self.event_pt)

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            self.status = info.lastStatusCode

    def onCallMediaState(self, prm):
        # Keep the CallInfo alive while reading its media vector (SWIG frees temporaries).
        info = self.getInfo()
        for m in info.media:
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_active = True
                # The null microphone into the call: the conference bridge then clocks the
                # stream, which is what sends queued DTMF.
                mic = pj.Endpoint.instance().audDevManager().getCaptureDevMedia()
                mic.startTransmit(self.getAudioMedia(m.index))


def pump(ep, seconds, until=lambda: False):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        ep.libHandleEvents(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--call", required=True, help="SIP URI to call")
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--event-pt", type=int, default=120)
    ap.add_argument("--dtmf", required=True, help="keys to press, e.g. 15*#0")
    args = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    # Events are pumped from this thread only.
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 3
    cfg.logConfig.consoleLevel = 3
    # Send a packet every 20 ms like a phone, not only while the (silent) microphone speaks.
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    # Only G.711, so the call is about DTMF and not codec choice.
    for c in ep.codecEnum2():
        ep.codecSetPriority(c.codecId, 255 if c.codecId.startswith("PCMU/") else 0)

    acfg = pj.AccountConfig()
    acfg.idUri = "sip:pjsua@127.0.0.1"
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.contactRewriteUse = 0
    acfg.mediaConfig.transportConfig.port = args.rtp_port
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acc = pj.Account()
    acc.create(acfg)

    call = Call(acc, args.event_pt)
    call.makeCall(args.call, pj.CallOpParam(True))
    pump(ep, 15, lambda: (call.confirmed and call.media_active) or call.disconnected)
    result = {"answered": call.confirmed and call.media_active}
    if result["answered"]:
        si = call.getStreamInfo(0)
        result.update(codec=si.codecName, tx_event_pt=si.audTxEventPt, rx_event_pt=si.audRxEventPt)
        # Let the greeting start, as a caller would, then press the keys.
        pump(ep, 1.5)
        try:
            call.dialDtmf(args.dtmf)
            result["sent"] = args.dtmf
        except pj.Error as e:
            result["dtmf_error"] = e.info()
        # Each key: 160 ms tone plus the pause pjmedia leaves between queued keys.
        pump(ep, 1.0 + 0.4 * len(args.dtmf))
        call.hangup(pj.CallOpParam(True))
        pump(ep, 5, lambda: call.disconnected)
    result["disconnected"] = call.disconnected
    print(json.dumps(result), flush=True)
    # Call objects must go before libDestroy, or pjsua2 aborts.
    del call
    del acc
    ep.libDestroy()
    return 0 if result["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
