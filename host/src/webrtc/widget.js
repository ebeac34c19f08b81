// Switchboard web calls: one self-contained script (no libraries, no build step, nothing inline,
// so it runs under a strict Content-Security-Policy) that lets a page talk to an agent.
//
//   <script src="https://switchboard.example.com/webrtc/widget.js" defer></script>
//   <div data-switchboard-number="1000" data-switchboard-ticket="TICKET"></div>
//
// Every element with `data-switchboard-number` gets a call button; audio starts only when it is
// clicked (browsers let a page play sound only after a user gesture). Optional attributes:
// `data-switchboard-endpoint` (the offer URL; default `/webrtc/<number>` on the host this script
// came from), `data-switchboard-metadata` (text the agent receives as the call's metadata) and
// `data-switchboard-label` (the button's text). The element's `data-switchboard-state` follows
// the call and `data-switchboard-status` holds the HTTP status of the offer, so a page can style
// them.
//
// Scripts use `Switchboard.call({number, ticket | token, endpoint, metadata, microphone,
// onEvent, onState})`: with a token the default endpoint is the control API's
// `/v1/webrtc/<number>`; `microphone` is getUserMedia's audio constraints; `onEvent` gets each
// call event and `onState` each state. It returns a call with `hangup()`, `key(k)`, `stats()`,
// `state`, `callId`, `status` (HTTP), `error`, `reason` and `done` (a promise settled when the
// call is over); `Switchboard.calls` lists the page's calls that are not over.
// States: microphone → offering → connecting → connected → ended, or failed at any point.
'use strict';

(() => {
  if (window.Switchboard) return;

  const KEY = /^[0-9*#A-D]$/;
  // The host is ICE-lite with one host candidate and no trickle: the offer waits for our own
  // candidates, which come from local interfaces only; a stuck gatherer must not hang the call.
  const GATHER_TIMEOUT_MS = 5000;
  // How long hangup() waits for the host's `ended` event before closing the connection itself
  // (closing it ends the call too, only less tidily).
  const HANGUP_GRACE_MS = 2000;

  // The host whose endpoints a call uses unless told otherwise: where this script came from.
  const HOST = document.currentScript
    ? new URL(document.currentScript.src, location.href).origin
    : location.origin;

  const live = new Set();

  class CallError extends Error {
    constructor(message, status = null) {
      super(message);
      this.name = 'CallError';
      this.status = status;
    }
  }

  // The metadata header must be one line of ASCII (fetch refuses anything else in a header);
  // JSON keeps its meaning with non-ASCII characters written as \u escapes.
  function metadataHeader(metadata) {
    if (typeof metadata === 'string') return metadata;
    return JSON.stringify(metadata)
      .replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  }

  // Why an offer was refused: the offer endpoints answer in plain text, the rest of the
  // control API (its token check, web calls being off) in JSON with a `detail`.
  function refusal(resp, body) {
    if ((resp.headers.get('Content-Type') || '').includes('json')) {
      try {
        const error = JSON.parse(body);
        return typeof error.detail === 'string' ? error.detail : JSON.stringify(error);
      } catch {
        // Not JSON after all: shown as it is.
      }
    }
    return body.trim().slice(0, 300) || resp.statusText;
  }

  function gathered(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === 'complete') done(); };
      const timer = setTimeout(done, GATHER_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  class Call {
    #over = false;
    #channel = null;
    #mic = null;
    #audio = null;
    #onEvent;
    #onState;
    #settle;
    #hungUp = false;

    constructor(o) {
      if (!o || !o.number) throw new TypeError('Switchboard.call needs a number');
      this.number = String(o.number);
      this.state = null;
      this.callId = null;
      this.status = null;
      this.error = null;
      // Why it ended: the host's `ended` reason, `hangup` or `closed`.
      this.reason = null;
      this.pc = null;
      this.#onEvent = o.onEvent || (() => {});
      this.#onState = o.onState || (() => {});
      this.done = new Promise((resolve) => { this.#settle = resolve; });
      live.add(this);
      this.#start(o).catch((err) => this.#fail(err));
    }

    async #start(o) {
      const credential = o.token || o.ticket;
      const endpoint = o.endpoint ||
        `${HOST}${o.token ? '/v1/webrtc/' : '/webrtc/'}${encodeURIComponent(this.number)}`;
      this.#set('microphone');
      const mic = await navigator.mediaDevices.getUserMedia({ audio: o.microphone ?? true });
      if (this.#over) {
        mic.getTracks().forEach((t) => t.stop());
        return;
      }
      this.#mic = mic;
      const pc = new RTCPeerConnection();
      this.pc = pc;
      mic.getAudioTracks().forEach((track) => pc.addTrack(track, mic));
      // Before the offer, so the offer carries the data channel's m-line (ordered, reliable).
      const channel = pc.createDataChannel('switchboard');
      this.#channel = channel;
      // The channel opens once ICE, DTLS and SCTP are up: from then on keys get through.
      channel.addEventListener('open', () => this.#set('connected'));
      channel.addEventListener('message', (m) => this.#message(m.data));
      // The host closes it after the call's `ended` event (with the reason); a connection lost
      // first closes it too.
      channel.addEventListener('close', () => this.#end(this.#hungUp ? 'hangup' : 'closed'));
      pc.addEventListener('track', (e) => this.#play(e.streams[0] || new MediaStream([e.track])));
      pc.addEventListener('connectionstatechange', () => {
        if (pc.connectionState === 'failed') {
          this.#fail(new CallError('the media connection failed (ICE or DTLS)'));
        }
      });
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      if (this.#over) return;

      this.#set('offering');
      const headers = { 'Content-Type': 'application/sdp' };
      if (credential) headers.Authorization = `Bearer ${credential}`;
      if (o.metadata !== undefined && o.metadata !== null) {
        headers['X-Switchboard-Metadata'] = metadataHeader(o.metadata);
      }
      const resp = await fetch(endpoint, {
        method: 'POST', headers, body: pc.localDescription.sdp, cache: 'no-store', credentials: 'omit',
      });
      this.status = resp.status;
      const body = await resp.text();
      if (resp.status !== 201) {
        throw new CallError(`refused (${resp.status}): ${refusal(resp, body)}`, resp.status);
      }
      this.callId = resp.headers.get('X-Switchboard-Call-Id');
      if (this.#over) return;
      this.#set('connecting');
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
    }

    // The call's events, exactly as the host's event stream carries them.
    #message(text) {
      let event;
      try {
        event = JSON.parse(text);
      } catch {
        return;
      }
      try {
        this.#onEvent(event, this);
      } catch (err) {
        console.error('Switchboard onEvent:', err);
      }
      if (event.type === 'ended') this.#end(event.reason || 'ended');
    }

    #play(stream) {
      if (!this.#audio) {
        this.#audio = document.createElement('audio');
        this.#audio.autoplay = true;
      }
      this.#audio.srcObject = stream;
      // The call started with a click, so playing is allowed; a refusal leaves the call up.
      this.#audio.play().catch(() => {});
    }

    #set(state) {
      if (this.state === state) return;
      this.state = state;
      try {
        this.#onState(state, this);
      } catch (err) {
        console.error('Switchboard onState:', err);
      }
    }

    // Hang up: ask the host to end the call, then close once it says so (or after a grace).
    hangup() {
      if (this.#over) return this.done;
      this.#hungUp = true;
      if (this.#channel && this.#channel.readyState === 'open') {
        this.#channel.send(JSON.stringify({ type: 'hangup' }));
        setTimeout(() => this.#end('hangup'), HANGUP_GRACE_MS);
      } else {
        this.#end('hangup');
      }
      return this.done;
    }

    // Press a key (0-9, *, #, A-D): it reaches the agent's on-dtmf. False when not connected.
    key(k) {
      const key = String(k).toUpperCase();
      if (!KEY.test(key)) throw new RangeError(`not a key: ${k}`);
      if (!this.#channel || this.#channel.readyState !== 'open') return false;
      this.#channel.send(JSON.stringify({ type: 'key', key }));
      return true;
    }

    // Audio counters of the connection: what was received (with its energy and level, which
    // show whether the agent is heard) and what was sent.
    async stats() {
      const out = { received: null, sent: null };
      if (!this.pc) return out;
      (await this.pc.getStats()).forEach((s) => {
        if (s.kind !== 'audio') return;
        if (s.type === 'inbound-rtp') {
          out.received = {
            packets: s.packetsReceived ?? 0,
            bytes: s.bytesReceived ?? 0,
            energy: s.totalAudioEnergy ?? 0,
            level: s.audioLevel ?? 0,
          };
        } else if (s.type === 'outbound-rtp') {
          out.sent = { packets: s.packetsSent ?? 0, bytes: s.bytesSent ?? 0 };
        }
      });
      return out;
    }

    #end(reason) {
      if (this.#over) return;
      this.reason = reason;
      this.#close();
      this.#set('ended');
      this.#settle(this);
    }

    #fail(err) {
      if (this.#over) return;
      this.error = err instanceof CallError ? err : new CallError(err && err.message ? err.message : String(err));
      this.#close();
      this.#set('failed');
      this.#settle(this);
    }

    #close() {
      this.#over = true;
      live.delete(this);
      if (this.pc) this.pc.close();
      if (this.#mic) this.#mic.getTracks().forEach((t) => t.stop());
      if (this.#audio) this.#audio.srcObject = null;
    }
  }

  const call = (options) => new Call(options);

  const STATUS_TEXT = {
    microphone: 'Waiting for the microphone…',
    offering: 'Calling…',
    connecting: 'Connecting…',
    connected: 'Connected',
    ended: 'Call ended',
  };

  // A call button (and a status line) in `el`, from its data-switchboard-* attributes.
  function mount(el) {
    if (el.dataset.switchboardState !== undefined) return;
    const d = el.dataset;
    const label = d.switchboardLabel || 'Call';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'switchboard-call';
    button.textContent = label;
    const status = document.createElement('span');
    status.className = 'switchboard-status';
    status.setAttribute('role', 'status');
    el.append(button, ' ', status);
    el.dataset.switchboardState = 'idle';
    let current = null;
    button.addEventListener('click', () => {
      if (current) {
        current.hangup();
        return;
      }
      delete el.dataset.switchboardStatus;
      current = call({
        number: d.switchboardNumber,
        ticket: d.switchboardTicket,
        endpoint: d.switchboardEndpoint,
        metadata: d.switchboardMetadata,
        onState: (state, c) => {
          el.dataset.switchboardState = state;
          if (c.status !== null) el.dataset.switchboardStatus = String(c.status);
          status.textContent = state === 'failed' ? `Call failed: ${c.error.message}` : STATUS_TEXT[state];
          const over = state === 'ended' || state === 'failed';
          button.textContent = over ? label : 'Hang up';
          if (over) current = null;
        },
      });
    });
  }

  function mountAll() {
    document.querySelectorAll('[data-switchboard-number]').forEach(mount);
  }

  window.Switchboard = Object.freeze({
    call,
    mount,
    CallError,
    // The calls of this page that are not over yet.
    get calls() { return [...live]; },
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mountAll);
  else mountAll();
})();
