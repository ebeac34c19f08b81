#!/usr/bin/env python3
"""pjsua2 caller for Switchboard's session-timer interop test (RFC 4028).

Calls a SIP URI from 127.0.0.1 with a null sound device and session timers always on, asking
for the given interval (Session-Expires and Min-SE), stays on the call for --talk seconds
(pjsip refreshes the session itself when it is the refresher), hangs up, and prints one JSON
line: whether the call was answered, whether it ended before our hang-up (and with which
status), and how long it was up.
"""

import argparse
import sys
import time

import pjsua2 as pj

import pjphone


class Call(pjphone.TrackedCall):
    """A tracked call that also notes when it was confirmed and when it ended, and why."""

    def __init__(self, acc):
        super().__init__(acc)
        self.confirmed_at = None
        self.disconnected_at = None
        self.reason = None

    def onCallState(self, prm):
        super().onCallState(prm)
        if self.confirmed and self.confirmed_at is None:
            self.confirmed_at = time.monotonic()
        if self.disconnected and self.disconnected_at is None:
            self.disconnected_at = time.monotonic()
            self.reason = self.getInfo().lastReason

    def on_audio(self, media):
        # The null microphone into the call, so RTP flows like a phone's.
        pj.Endpoint.instance().audDevManager().getCaptureDevMedia().startTransmit(media)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--call", required=True, help="SIP URI to call")
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--session-expires", type=int, default=90)
    ap.add_argument("--min-se", type=int, default=90)
    ap.add_argument("--talk", type=float, required=True, help="seconds on the call")
    args = ap.parse_args()

    def timers(acfg):
        acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
        acfg.callConfig.timerSessExpiresSec = args.session_expires
        acfg.callConfig.timerMinSESec = args.min_se

    def talk(call, result):
        pjphone.pump(ep, args.talk, lambda: call.disconnected)
        result["ended_early"] = call.disconnected
        if call.disconnected:
            result["reason"] = call.reason
        end = call.disconnected_at or time.monotonic()
        result["up_secs"] = round(end - call.confirmed_at, 1)

    # Level 4 logs every SIP message: the refreshes show in the test's log.
    ep = pjphone.endpoint(pj.PJSIP_TRANSPORT_UDP, log_level=4)
    acc = pjphone.account(args.rtp_port, timers)
    code = pjphone.run(ep, Call(acc), args.call, talk)
    del acc
    ep.libDestroy()
    return code


if __name__ == "__main__":
    sys.exit(main())
