//! Open newtypes for every enumerated wire field: unknown values parse and are handled.

macro_rules! open_enum {
    ($(#[$doc:meta])* $name:ident($repr:ty) { $($(#[$cdoc:meta])* $konst:ident = $val:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cdoc])* pub const $konst: $name = $name($val);)*

            /// The constant's name, if this value has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$konst => Some(stringify!($konst)),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }
    };
}

open_enum! {
    /// Record type. 1..=7 and -1 (0xFFFF) are session records; 0x01xx are connection-level ones.
    FrameType(u16) {
        OPEN = 1,
        CLOSE = 2,
        SEND = 3,
        SEND_UDP = 4,
        ACK = 5,
        END = 6,
        RESET = 7,
        /// -1 as a 16-bit two's complement.
        OPEN_REPLY = 0xFFFF,
        HELLO = 0x0100,
        PING = 0x0101,
        PONG = 0x0102,
        GOAWAY = 0x0103,
    }
}

open_enum! {
    /// Which half of a session a Close shuts (the values of `shutdown(2)`'s `how`).
    Direction(u16) {
        /// The sender stopped reading: the receiver must stop writing.
        READ = 0,
        /// The sender will send no more data (a FIN).
        WRITE = 1,
        /// The sender is done with the session in both directions (its terminal record).
        BOTH = 2,
    }
}

open_enum! {
    /// Transport of a session, as IP protocol numbers.
    Protocol(u16) {
        TCP = 6,
        UDP = 17,
    }
}

open_enum! {
    /// OpenReply result. With one id space shared by both ends (the opener's id) the field is a
    /// status, not an id, and the failures mirror SOCKS5 reply codes.
    OpenRc(u16) {
        OK = 0,
        GENERAL_FAILURE = 1,
        REFUSED_BY_POLICY = 2,
        NETWORK_UNREACHABLE = 3,
        HOST_UNREACHABLE = 4,
        CONNECTION_REFUSED = 5,
        TIMED_OUT = 6,
        UNSUPPORTED = 7,
        NAME_NOT_RESOLVED = 8,
        TOO_MANY_SESSIONS = 9,
        CANCELLED = 10,
    }
}

open_enum! {
    /// Why a session ended abruptly (End or Reset).
    ResetCode(u16) {
        NONE = 0,
        IO_ERROR = 1,
        IDLE_TIMEOUT = 2,
        CANCELLED = 3,
        REFUSED = 4,
    }
}

open_enum! {
    /// Why the whole connection is being closed (GoAway).
    ErrorCode(u16) {
        NO_ERROR = 0,
        PROTOCOL_ERROR = 1,
        FRAME_TOO_LARGE = 2,
        FLOW_CONTROL = 3,
        VERSION_MISMATCH = 4,
        IDLE_TIMEOUT = 5,
        INTERNAL_ERROR = 6,
    }
}
