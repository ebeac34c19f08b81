#!/usr/bin/env python3
"""pjsua2 caller for Switchboard's session-timer interop test (RFC 4028).

Calls a SIP URI from 127.0.0.1 with a null sound device and session timers always on, asking
for the given interval (Session-Expires and Min-SE), stays on the call for --talk seconds
(pjsip refreshes the session itself when it is the refresher), hangs up, and prints one JSON
line: whether the call was answered, whether it ended before our hang-up (and with which
status), and how long it was up.
"""

import argparse
import json
import sys
import time

import pjsua2 as pj


class Call(pj.Call):
    def __init__(self, acc):
        super().__init__(acc)
        self.confirmed_at = None
        self.disconnected_at = None
        self.status = None
        self.reason = None

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and self.confirmed_at is None:
            self.confirmed_at = time.monotonic()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected_at = time.monotonic()
            self.status = info.lastStatusCode
            self.reason = info.lastReason

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for m in info.media:
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                # The null microphone into the call, so RTP flows like a phone's.
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
    ap.add_argument("--session-expires", type=int, default=90)
    ap.add_argument("--min-se", type=int, default=90)
    ap.add_argument("--talk", type=float, required=True, help="seconds on the call")
    args = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    # Level 4 logs every SIP message: the refreshes show in the test's log.
    cfg.logConfig.level = 4
    cfg.logConfig.consoleLevel = 4
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
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
    acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
    acfg.callConfig.timerSessExpiresSec = args.session_expires
    acfg.callConfig.timerMinSESec = args.min_se
    acc = pj.Account()
    acc.create(acfg)

    call = Call(acc)
    call.makeCall(args.call, pj.CallOpParam(True))
    pump(ep, 15, lambda: call.confirmed_at is not None or call.disconnected_at is not None)
    result = {"answered": call.confirmed_at is not None}
    if result["answered"]:
        pump(ep, args.talk, lambda: call.disconnected_at is not None)
        result["ended_early"] = call.disconnected_at is not None
        if result["ended_early"]:
            result["status"] = call.status
            result["reason"] = call.reason
        else:
            call.hangup(pj.CallOpParam(True))
            pump(ep, 5, lambda: call.disconnected_at is not None)
        end = call.disconnected_at or time.monotonic()
        result["up_secs"] = round(end - call.confirmed_at, 1)
    print(json.dumps(result), flush=True)
    # Call objects must go before libDestroy, or pjsua2 aborts.
    del call
    del acc
    ep.libDestroy()
    return 0 if result["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
