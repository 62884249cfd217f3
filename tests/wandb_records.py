"""Read an offline W&B run file (`run-*.wandb`): LevelDB-log framed protobuf records after a 7-byte header."""

from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7


def read_records(path: Path) -> list:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    records, pos, chunk = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        kind = data[pos + 6]
        if kind == 0 and length == 0:
            pos += left  # zero-filled rest of a block
            continue
        chunk += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def history_keys(records) -> set[str]:
    return {item.key or "/".join(item.nested_key) for r in records if r.WhichOneof("record_type") == "history"
            for item in r.history.item}
