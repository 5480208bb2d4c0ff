"""The CPU accounting of the load tests' phases (loadtest/cpu.py), on made-up samples."""

import os

from boxoffice.loadtest import cpu


def test_usage_gives_the_busy_share_of_the_machine_and_cpu_seconds_per_kind_of_process():
    hz = os.sysconf("SC_CLK_TCK")
    before = cpu.CpuSample(10.0, busy_ticks=1_000, total_ticks=4_000,
                           per_pid={1: (50, "firestore emulator"), 2: (10, "email subscriber")})
    after = cpu.CpuSample(12.0, busy_ticks=1_300, total_ticks=4_400,
                          per_pid={1: (50 + 2 * hz, "firestore emulator"), 2: (10 + hz, "email subscriber"),
                                   3: (hz // 2, "email subscriber")})  # started in between: counts from zero
    got = cpu.usage(before, after)
    assert got is not None
    assert got["machine_busy"] == 0.75 and got["wall_s"] == 2.0
    assert got["cpu_s"] == {"firestore emulator": 2.0, "email subscriber": 1.5}
    assert list(got["cpu_s"]) == ["firestore emulator", "email subscriber"]  # the biggest first


def test_processes_are_named_by_their_command_line_and_no_samples_give_no_figure():
    assert cpu._kind("/usr/bin/java -cp x/cloud-firestore-emulator/y.jar") == "firestore emulator"
    assert cpu._kind("python -m boxoffice.runtime.part_process subscriber-email --dir d") == "email subscriber"
    assert cpu._kind("bash") == "other"
    assert cpu.usage(None, None) is None


def test_a_recording_gives_the_usage_of_the_samples_around_a_window_known_afterwards():
    recorder = cpu.Recorder()
    recorder.samples = [cpu.CpuSample(float(t), busy_ticks=100 * t, total_ticks=200 * t) for t in range(10)]
    recorder.samples[5] = cpu.CpuSample(5.0, busy_ticks=900, total_ticks=1_000)  # inside: only the two around count
    got = recorder.between(4.5, 5.5)
    assert got is not None and got["wall_s"] == 2.0  # the samples at 4 s and 6 s
    assert got["machine_busy"] == round((600 - 400) / (1_200 - 800), 3)
    assert recorder.between(-1.0, 5.0) is None and recorder.between(5.0, 10.5) is None  # not covered
