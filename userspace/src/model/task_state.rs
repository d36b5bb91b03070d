//! The state letter, computed from `task->__state` and `task->exit_state`
//! as fs/proc/array.c's task_state_index() does.

const TASK_REPORT: u32 = 0x7f;
const TASK_UNINTERRUPTIBLE: u32 = 0x2;
const TASK_NOLOAD: u32 = 0x400;
const TASK_IDLE: u32 = TASK_UNINTERRUPTIBLE | TASK_NOLOAD;
const TASK_REPORT_IDLE: u32 = TASK_REPORT + 1;
const TASK_RTLOCK_WAIT: u32 = 0x1000;
const TASK_FROZEN: u32 = 0x8000;
const LETTERS: &[u8] = b"RSDTtXZPI";

pub fn state_letter(state: u32, exit_state: i32) -> char {
    let mut s = (state | exit_state as u32) & TASK_REPORT;
    if state & TASK_IDLE == TASK_IDLE {
        s = TASK_REPORT_IDLE;
    }
    // Frozen and rtlock waiters are reported as uninterruptible.
    if state & (TASK_RTLOCK_WAIT | TASK_FROZEN) != 0 {
        s = TASK_UNINTERRUPTIBLE;
    }
    let index = (u32::BITS - s.leading_zeros()) as usize; // fls()
    LETTERS.get(index).map(|&c| c as char).unwrap_or('?')
}

#[cfg(test)]
mod tests {
    use super::state_letter;

    #[test]
    fn letters() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(1, 0), 'S');
        assert_eq!(state_letter(2, 0), 'D');
        assert_eq!(state_letter(0x402, 0), 'I');
        assert_eq!(state_letter(4, 0), 'T');
        assert_eq!(state_letter(8, 0), 't');
        assert_eq!(state_letter(0, 0x20), 'Z');
        assert_eq!(state_letter(0x8001, 0), 'D');
    }
}
