"""Distribution strategies and the cross-replica gather the losses rely on.

Everything TensorFlow-specific about distribution lives here. Library code asks two questions:

* `make_strategy(name, ...)`: which `tf.distribute.Strategy` to run under.
* `gather_global(*tensors)`: inside a replica, the global batch (every replica's rows
  concatenated in replica order) and where this replica's rows start in it.

`gather_global` uses `ReplicaContext.all_gather`, whose gradient is exact: the gradients that
every replica sends to the gathered tensor are summed and the local rows sliced out, with no
division by the replica count. A loss computed from local anchors against the gathered batch
therefore has the same per-sample values and gradients as the single-device computation over the
whole batch. Under a non-TensorFlow Keras backend (e.g. JAX for GPU benchmarks) there is no
replica context and the inputs are returned unchanged.
"""

import weakref

import keras

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def make_strategy(name="default", tpu=None, devices=None):
    """Creates a `tf.distribute.Strategy` by name.

    Args:
        name: One of `STRATEGIES`. "default" is the no-op strategy (one device), "mirrored"
            synchronous data parallelism over the local GPUs (or `devices`), "multiworker"
            `MultiWorkerMirroredStrategy` configured from the `TF_CONFIG` environment variable,
            "tpu" a `TPUStrategy` on the TPU named by `tpu`.
        tpu: TPU name or address for "tpu" ("" or "local" for a TPU VM).
        devices: Optional list of device strings for "mirrored", e.g. `["/cpu:0", "/cpu:1"]`.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: `name` is unknown, or `tpu` is missing for "tpu".
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if tpu is None:
            raise ValueError(
                "Strategy 'tpu' needs a TPU address: pass --tpu=<name or grpc://address> "
                "(--tpu=local on a TPU VM).")
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu="" if tpu == "local" else tpu)
        except (ValueError, OSError) as error:  # URLError (Cloud TPU API look-up) is an OSError.
            raise ValueError(
                f"Cannot find the TPU --tpu={tpu!r} ({' '.join(str(error).split())}): pass the "
                "TPU's name in this Cloud project, grpc://<host>:<port>, or local on a TPU VM."
            ) from None
        _check_reachable(resolver, tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)


def configure_cpu_devices(count):
    """Splits the CPU into `count` logical devices, so "mirrored" can run `count` replicas.

    For trying data parallelism on a machine without accelerators (`--cpu_devices`). Must run
    before TensorFlow initialises its runtime, i.e. before any other TensorFlow op.

    Args:
        count: Python int >= 1; 1 leaves the CPU as it is.

    Returns:
        The logical CPU device names, e.g. `["/cpu:0", "/cpu:1"]`.

    Raises:
        ValueError: `count` is not a positive int, or the runtime is already initialised.
    """
    import tensorflow as tf

    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"cpu_devices must be an int >= 1, got {count!r}.")
    cpus = tf.config.list_physical_devices("CPU")
    if count > 1:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            existing = len(tf.config.list_logical_devices("CPU"))
            if existing != count:
                raise ValueError(
                    f"cannot split the CPU into {count} devices: TensorFlow is already running "
                    f"with {existing}; configure the devices before any other TensorFlow op."
                ) from None
    return [f"/cpu:{index}" for index in range(count)]


def _check_reachable(resolver, tpu, timeout=10.0):
    """Raises a ValueError naming the address if a TPU worker does not accept connections.

    TensorFlow's connect would otherwise wait for an unreachable worker indefinitely.
    """
    import socket

    for address in resolver.cluster_spec().as_dict().get("worker", []):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except (OSError, ValueError) as error:
            raise ValueError(
                f"The TPU worker {address} of --tpu={tpu!r} does not answer ({error}): check "
                "the address, that the TPU is running, and the network between here and it."
            ) from None


def _replica_context():
    """The current multi-replica `ReplicaContext`, or None when there is nothing to gather."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas_in_sync():
    """Number of replicas training in lock-step (1 outside a multi-replica context)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def gather_global(*tensors):
    """Concatenates tensors along axis 0 over every replica, with exact gradients.

    Args:
        *tensors: Tensors whose leading axis is this replica's batch, `[local_batch, ...]`; they
            all share that leading size. Replicas may hold different local batch sizes.

    Returns:
        `(gathered, offset)`: `gathered` is a tuple with one `[global_batch, ...]` tensor per
        input (replica 0's rows first), `offset` an int32 scalar, the index of this replica's
        first row in the global batch. Outside a multi-replica context the inputs are returned
        as they are with offset 0.
    """
    context = _replica_context()
    if context is None:
        return tuple(tensors), 0
    import tensorflow as tf

    local_size = tf.shape(tensors[0])[:1]
    sizes = context.all_gather(local_size, axis=0)  # [num_replicas]
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(sizes[:replica_id])
    gathered = tuple(context.all_gather(t, axis=0) for t in tensors)
    return gathered, offset


def assign_replicated(variables, values):
    """Assigns values that every replica computed identically (an EMA, a queue update).

    In a multi-replica context a plain `assign` of a mirrored variable from inside a replica is
    refused (or would need an aggregation); this applies each value once per device from the
    cross-replica context, as Keras' optimizers apply their updates.

    Args:
        variables: Keras or TensorFlow variables.
        values: Tensors shaped like `variables`, equal on every replica.
    """
    variables, values = list(variables), list(values)
    context = _replica_context()
    if context is None:
        for variable, value in zip(variables, values):
            variable.assign(value)
        return

    def merge_fn(strategy, values):
        for variable, value in zip(variables, values):
            if isinstance(variable, keras.Variable):
                variable = variable.value  # The tf.Variable (mirrored) behind it.
            strategy.extended.update(
                variable, lambda v, x: v.assign(x), args=(value,), group=False)

    context.merge_call(merge_fn, args=(values,))


def local_cluster_configs(num_workers, host="127.0.0.1"):
    """`TF_CONFIG` values for `num_workers` workers on this machine (loopback ports).

    For trying multi-worker training on one host (tests, `bench/scaling.py`): start the same
    command once per value, each with its own `TF_CONFIG` environment variable. The ports are
    free when this returns (a later process may still take one before the workers bind it).

    Args:
        num_workers: Python int >= 1.
        host: the address the workers listen on.

    Returns:
        A list of `num_workers` JSON strings, worker 0 (the chief) first.
    """
    import json
    import socket

    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}.")
    ports = []
    probes = []
    for _ in range(num_workers):  # Hold every probe open so the ports differ.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind((host, 0))
        probes.append(probe)
        ports.append(probe.getsockname()[1])
    for probe in probes:
        probe.close()
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            for index in range(num_workers)]


def num_workers(strategy):
    """Input workers (hosts) of `strategy`: 1 except under multi-worker strategies."""
    return int(getattr(strategy.extended, "_num_workers", 1) or 1)


def is_chief(strategy):
    """Whether this process owns the run directory (the Keras multi-worker convention).

    The chief is the "chief" task, or worker 0 of a cluster without one; a process outside a
    cluster (one device, mirrored, a TPU host) is always the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if num_workers(strategy) <= 1 or not spec:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec


def _sum_over_replicas(strategy, value):
    """The sum over every replica (of every worker) of the float `value` each one gives."""
    import tensorflow as tf

    function = _SUM_FUNCTIONS.get(strategy)
    if function is None:
        @tf.function
        def function(value):
            per_replica = strategy.run(tf.identity, args=(value,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        _SUM_FUNCTIONS[strategy] = function
    return float(function(tf.constant(value, tf.float32)))


_SUM_FUNCTIONS = weakref.WeakKeyDictionary()


def barrier(strategy):
    """Returns once every worker of `strategy` got here (a one-scalar all-reduce)."""
    if num_workers(strategy) > 1:
        _sum_over_replicas(strategy, 1.0)


def any_worker(strategy, flag):
    """Whether `flag` (a Python bool) is true on any worker; every worker must call this."""
    return _sum_over_replicas(strategy, float(bool(flag))) > 0
