// A front-desk receptionist on a voice model: greets, answers opening-hours questions with a
// tool, takes messages (stored in kv), transfers to a person when the caller asks, and hands
// the call to the `appointments` agent (keypad 2, or a caller who mentions an appointment).
// The JavaScript twin of plugins/receptionist (Rust): same prompts, tools and behaviour.

import { Agent, call, config, kv, log, say, tool } from "switchboard-agent";

/** Phrases after which the caller clearly wants a person, even if the model misses it. */
const ASK_FOR_PERSON = ["speak to a person", "talk to a person", "real person", "human"];

const setting = (key) => config.get(key) ?? "";

/** The agent that handles appointments: a hand-off inside the call, not a SIP transfer. */
const APPOINTMENTS = "agent:appointments";

export default class Receptionist extends Agent {
  static description = "Receptionist: opening hours, messages, transfer to a person";
  static numbers = ["2002"];

  caller = "";
  transferring = false;

  onStart(info) {
    this.caller = info.caller;
    const business = setting("business-name");
    return {
      instructions:
        `You are the friendly receptionist of ${business}. Keep answers short: this is a ` +
        "phone call. Use `opening_hours` for opening times. If the caller wants to leave a " +
        "message, collect their name, callback number and message, then call " +
        "`take_message`. If the caller asks for a person, call `transfer_to_person`. " +
        "Appointments are handled by the appointments desk: callers press 2 or mention " +
        "their appointment to be passed on.",
      greeting: `Thank you for calling ${business}. How can I help you today?`,
      tools: [
        tool({
          name: "opening_hours",
          description: "Opening hours of the business",
          handler: () => ({ hours: setting("opening-hours") }),
        }),
        tool({
          name: "take_message",
          description: "Store a message for the staff",
          parameters: {
            type: "object",
            properties: {
              name: { type: "string" },
              callback_number: { type: "string" },
              message: { type: "string" },
            },
            required: ["name", "message"],
          },
          handler: (args) => this.takeMessage(args),
        }),
        tool({
          name: "transfer_to_person",
          description: "Transfer the caller to the front desk",
          handler: () => this.transferToFrontDesk(),
        }),
      ],
    };
  }

  transferToFrontDesk() {
    if (this.transferring) {
      return "A transfer is already under way.";
    }
    call.say("One moment, I am putting you through.");
    call.transfer(setting("front-desk"));
    this.transferring = true;
    return "Transferring the caller to the front desk.";
  }

  /** Hand the caller to the appointments agent, after a short word. */
  handToAppointments() {
    if (this.transferring) {
      return;
    }
    try {
      call.say("Of course, I am passing you to our appointments desk.");
      call.transfer(APPOINTMENTS);
      this.transferring = true;
    } catch (e) {
      log.warn(`hand-off refused: ${e.message}`);
    }
  }

  takeMessage({ name, callback_number, message }) {
    if (typeof name !== "string" || typeof message !== "string") {
      throw new Error("bad arguments: `name` and `message` are required strings");
    }
    if (message.trim() === "") {
      throw new Error("the message is empty; ask the caller what to pass on");
    }
    const id = kv.keys("message:").length + 1;
    const record = { name, callback_number: callback_number ?? this.caller, message };
    try {
      kv.set(`message:${String(id).padStart(6, "0")}`, JSON.stringify(record));
    } catch (e) {
      throw new Error(`could not store the message: ${e.message}`);
    }
    log.info(`message ${id} taken for ${name}`);
    return `Message ${id} saved. Tell the caller we will call back.`;
  }

  onTranscript(role, text, isFinal) {
    const lower = text.toLowerCase();
    if (role !== "caller" || !isFinal) {
      return [];
    }
    if (ASK_FOR_PERSON.some((p) => lower.includes(p))) {
      try {
        this.transferToFrontDesk();
      } catch (e) {
        log.warn(`transfer refused: ${e.message}`);
      }
    } else if (lower.includes("appointment")) {
      this.handToAppointments();
    }
    return [];
  }

  onDtmf(digits) {
    if (digits === "0") {
      try {
        this.transferToFrontDesk();
      } catch (e) {
        log.warn(`transfer refused: ${e.message}`);
      }
    } else if (digits === "2") {
      this.handToAppointments();
    }
    return [];
  }

  onTransferResult(target, error) {
    this.transferring = false;
    return error === undefined ? [] : [say("Nobody is free at the moment. Can I take a message instead?")];
  }
}
