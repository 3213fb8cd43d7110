"""Multi-Paxos (crash faults): ``bft.paxos.config.PaxosConfig`` and ``bft.paxos.core.PaxosCore``."""
