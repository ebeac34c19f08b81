// The `{{name}}` agent. The host creates a new instance of this class for every call.
import { Agent, config, hangup, say, tool, transfer } from "switchboard-agent";

export default class extends Agent {
  static description = "{{name}}: answers calls to {{number}}";
  static numbers = ["{{number}}"];

  onStart(info) {
    const business = config.get("business-name") ?? "us";
    return {
      instructions: `You answer the phone for ${business}. Keep answers short. ` +
        "Use `current_time` when the caller asks what time it is.",
      greeting: `Hello, you have reached ${business}. Press 0 for a person, or just ask.`,
      tools: [
        tool({
          name: "current_time",
          description: "The current time (UTC)",
          handler: () => ({ utc: new Date().toISOString() }),
        }),
      ],
    };
  }

  onDtmf(digits) {
    switch (digits) {
      case "0":
        return [say("Putting you through."), transfer("sip:front-desk@127.0.0.1")];
      case "#":
        return [say("Goodbye."), hangup()];
      default:
        return [say(`${digits} is not an option. Press 0 for a person.`)];
    }
  }
}
