// The `{{name}}` agent: greets the caller, answers with the voice model, offers one tool and a
// keypad menu (0 for an operator, # to hang up). The host creates a new instance of this class
// for every call.
import { Agent, config, hangup, say, tool, transfer } from "switchboard-agent";

export default class extends Agent {
  static description = "{{title}}: a new Switchboard agent";
  static numbers = ["{{number}}"];

  onStart(info) {
    const business = config.get("business-name") ?? "{{title}}";
    return {
      instructions: `You answer the phone for ${business}. Be brief and friendly. ` +
        "When the caller asks when we are open, call the `opening_hours` tool.",
      greeting: `Hello, this is ${business}. Press 0 for an operator, or tell me what you need.`,
      tools: [
        tool({
          name: "opening_hours",
          description: "When we are open",
          handler: () => "Monday to Friday, 9:00 to 17:00",
        }),
      ],
    };
  }

  onDtmf(digits) {
    switch (digits) {
      case "0":
        return [say("Connecting you to an operator."), transfer("sip:operator@127.0.0.1")];
      case "#":
        return [say("Goodbye."), hangup()];
      default:
        return [say("Press 0 for an operator, or # to hang up.")];
    }
  }
}
