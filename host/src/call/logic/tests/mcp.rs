//! MCP tool calls: the agent hears of each and may veto it; the call runs beside the call
//! (other inputs are handled meanwhile) and its result, or its failure, goes to the model.

use super::*;

fn mcp_rig() -> Rig {
    let mut rig = Rig::started(Vec::new());
    let route = McpRoute {
        server: "crm".into(),
        tool: "lookup".into(),
    };
    rig.logic
        .config
        .mcp_tools
        .insert("crm__lookup".into(), route);
    rig
}

fn route() -> McpRoute {
    McpRoute {
        server: "crm".into(),
        tool: "lookup".into(),
    }
}

fn model_call() -> Input {
    Input::ToolCall {
        call_id: "t1".into(),
        name: "crm__lookup".into(),
        arguments: r#"{"id":7}"#.into(),
    }
}

fn tool_result(ok: bool, output: &str) -> Effect {
    Effect::Record(EventKind::ToolResult {
        call_id: "t1".into(),
        ok,
        output: output.into(),
    })
}

fn to_model(output: &str) -> Effect {
    Effect::Model(Command::ToolResult {
        call_id: "t1".into(),
        output: output.into(),
    })
}

#[test]
fn the_agent_hears_of_an_mcp_call_before_it_runs() {
    let mut rig = mcp_rig();
    let effects = rig.input(model_call());
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::ToolCall {
                call_id: "t1".into(),
                name: "crm__lookup".into(),
                arguments: r#"{"id":7}"#.into(),
            }),
            Effect::Hook(Hook::McpCall(Notification::McpCall {
                server: "crm".into(),
                tool: "lookup".into(),
                arguments: r#"{"id":7}"#.into(),
            })),
        ]
    );
}

#[test]
fn an_mcp_call_runs_beside_the_call_and_its_result_goes_to_the_model() {
    let mut rig = mcp_rig();
    rig.input(model_call());
    let effects = rig.input(Input::Hook(HookResult::Mcp(Ok((Vec::new(), None)))));
    assert_eq!(
        effects,
        vec![Effect::McpCall {
            call_id: "t1".into(),
            route: route(),
            arguments: r#"{"id":7}"#.into(),
        }]
    );
    // The call does not wait for it: the caller's words still reach the agent.
    let effects = rig.input(Input::Transcript {
        role: Role::Caller,
        text: "are you there?".into(),
        is_final: true,
    });
    assert!(
        effects.contains(&Effect::Hook(Hook::Transcript(
            Role::Caller,
            "are you there?".into()
        ))),
        "{effects:?}"
    );
    rig.actions(Vec::new());
    rig.at_ms(900);
    let effects = rig.input(Input::McpDone {
        call_id: "t1".into(),
        route: route(),
        result: Ok("Ann, gold customer".into()),
    });
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::usage(vec![UsageItem {
                provider: "crm".into(),
                stage: "mcp".into(),
                kind: "tool".into(),
                unit: "calls".into(),
                amount: 1.0,
            }])),
            tool_result(true, "Ann, gold customer"),
            to_model("Ann, gold customer"),
            Effect::Hook(Hook::Event(Notification::McpResult {
                server: "crm".into(),
                tool: "lookup".into(),
                outcome: Ok("Ann, gold customer".into()),
            })),
        ]
    );
}

#[test]
fn a_vetoed_mcp_call_never_runs_and_the_model_gets_the_reason() {
    let mut rig = mcp_rig();
    rig.input(model_call());
    let veto = Some("customers are looked up by the front desk".to_string());
    let effects = rig.input(Input::Hook(HookResult::Mcp(Ok((Vec::new(), veto)))));
    assert_eq!(
        effects,
        vec![
            tool_result(false, "customers are looked up by the front desk"),
            to_model(r#"{"error":"customers are looked up by the front desk"}"#),
        ]
    );
}

#[test]
fn an_mcp_server_that_failed_gives_the_model_an_error_and_the_call_goes_on() {
    let mut rig = mcp_rig();
    rig.input(model_call());
    rig.input(Input::Hook(HookResult::Mcp(Ok((Vec::new(), None)))));
    rig.at_ms(10_000);
    let why = "tool unavailable: no answer within 10s";
    let effects = rig.input(Input::McpDone {
        call_id: "t1".into(),
        route: route(),
        result: Err(why.into()),
    });
    assert!(effects.contains(&tool_result(false, why)), "{effects:?}");
    assert!(
        effects.contains(&to_model(&serde_json::json!({ "error": why }).to_string())),
        "{effects:?}"
    );
    assert!(!rig.logic.ended());
}

#[test]
fn a_tool_that_is_not_an_mcp_tool_still_goes_to_the_agent() {
    let mut rig = mcp_rig();
    let effects = rig.input(Input::ToolCall {
        call_id: "t2".into(),
        name: "crm_lookup".into(),
        arguments: "{}".into(),
    });
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::ToolCall {
            name: "crm_lookup".into(),
            arguments: "{}".into(),
        }))
    );
}

#[test]
fn the_agent_a_call_is_handed_to_brings_its_own_mcp_tools() {
    let mut rig = mcp_rig();
    rig.input(dtmf('2'));
    rig.actions(vec![Action::Transfer("agent:appointments".into())]);
    let calendar = McpRoute {
        server: "calendar".into(),
        tool: "free_slots".into(),
    };
    let started = HandedOff {
        version: "0.2.0".into(),
        actions: Vec::new(),
        greeting: None,
        new_session: false,
        end_call: false,
        mcp_tools: [("calendar__free_slots".to_string(), calendar)].into(),
        conversation: ConversationConfig::off(),
    };
    rig.input(Input::HandedOff(Ok(started)));
    let call = |name: &str| Input::ToolCall {
        call_id: "t9".into(),
        name: name.into(),
        arguments: "{}".into(),
    };
    let effects = rig.input(call("calendar__free_slots"));
    assert!(
        matches!(effects.last(), Some(Effect::Hook(Hook::McpCall(_)))),
        "{effects:?}"
    );
    rig.input(Input::Hook(HookResult::Mcp(Ok((
        Vec::new(),
        Some("no".into()),
    )))));
    // The first agent's MCP tools went with it: the new agent is asked as for its own tools.
    let effects = rig.input(call("crm__lookup"));
    assert!(
        matches!(effects.last(), Some(Effect::Hook(Hook::ToolCall { .. }))),
        "{effects:?}"
    );
}
