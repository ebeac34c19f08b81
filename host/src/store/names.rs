//! The text forms of direction, state and role, as both back ends store them.

use super::{CallState, Direction, Role};

pub(super) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

pub(super) fn parse_direction(text: &str) -> Option<Direction> {
    match text {
        "inbound" => Some(Direction::Inbound),
        "outbound" => Some(Direction::Outbound),
        _ => None,
    }
}

pub(super) fn state_str(s: CallState) -> &'static str {
    match s {
        CallState::Active => "active",
        CallState::Ended => "ended",
        CallState::EndedAbnormally => "ended_abnormally",
    }
}

pub(super) fn parse_state(text: &str) -> Option<CallState> {
    match text {
        "active" => Some(CallState::Active),
        "ended" => Some(CallState::Ended),
        "ended_abnormally" => Some(CallState::EndedAbnormally),
        _ => None,
    }
}

pub(super) fn role_str(r: Role) -> &'static str {
    match r {
        Role::Caller => "caller",
        Role::Agent => "agent",
    }
}

pub(super) fn parse_role(text: &str) -> Option<Role> {
    match text {
        "caller" => Some(Role::Caller),
        "agent" => Some(Role::Agent),
        _ => None,
    }
}
