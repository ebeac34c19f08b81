"""What Switchboard's pjsua2 callers share: an endpoint on 127.0.0.1 whose events are pumped
from one thread, with a null sound device and only PCMU; an account that never rewrites
addresses; a call that tracks its state; and the run of a call from dialling to the one JSON
line the test reads."""

import json
import time

import pjsua2 as pj


class TrackedCall(pj.Call):
    """A call that remembers whether it was confirmed, had active audio and ended (and how)."""

    def __init__(self, acc):
        super().__init__(acc)
        self.confirmed = False
        self.disconnected = False
        self.media_active = False
        self.status = None

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
                self.on_audio(self.getAudioMedia(m.index))

    def on_audio(self, media):
        """The call's audio is active (again): connect what the caller plays and hears."""

    def release(self):
        """The call is over: let go of what was connected to its audio."""


def pump(ep, seconds, until=lambda: False):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        ep.libHandleEvents(10)


def endpoint(transport, log_level=3, tls=None):
    """A started endpoint with one `transport` on 127.0.0.1; `tls` sets its TlsConfig."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    # Events are pumped from this thread only.
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = log_level
    cfg.logConfig.consoleLevel = log_level
    # Send a packet every 20 ms like a phone, not only while the microphone speaks.
    cfg.medConfig.noVad = True
    cfg.medConfig.clockRate = 8000
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    if tls is not None:
        tls(tcfg.tlsConfig)
    ep.transportCreate(transport, tcfg)
    ep.libStart()
    # Only G.711 μ-law: the tests are about signalling, keys and security, not codec choice.
    for c in ep.codecEnum2():
        ep.codecSetPriority(c.codecId, 255 if c.codecId.startswith("PCMU/") else 0)
    return ep


def account(rtp_port, configure=lambda acfg: None):
    """An account on 127.0.0.1 with its RTP on `rtp_port`; `configure` adds to its config."""
    acfg = pj.AccountConfig()
    acfg.idUri = "sip:pjsua@127.0.0.1"
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.contactRewriteUse = 0
    acfg.mediaConfig.transportConfig.port = rtp_port
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    configure(acfg)
    acc = pj.Account()
    acc.create(acfg)
    return acc


def run(ep, call, uri, answered):
    """Dial `uri` on `call`; once it is answered, `answered(call, result)` plays the caller's part
    and adds to the result; then hang up, print the result as one JSON line and give the exit
    code (0 when the call was answered). The caller then drops its account and destroys the
    endpoint: pjsua2 aborts when a call or account outlives `libDestroy`, and `call` goes when
    this returns."""
    call.makeCall(uri, pj.CallOpParam(True))
    pump(ep, 15, lambda: (call.confirmed and call.media_active) or call.disconnected)
    result = {"answered": call.confirmed and call.media_active, "status": call.status}
    if result["answered"]:
        result["codec"] = call.getStreamInfo(0).codecName
        answered(call, result)
        if not call.disconnected:
            call.hangup(pj.CallOpParam(True))
        pump(ep, 5, lambda: call.disconnected)
    result["disconnected"] = call.disconnected
    print(json.dumps(result), flush=True)
    call.release()
    return 0 if result["answered"] else 1
