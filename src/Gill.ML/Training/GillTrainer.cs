using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Gill.ML.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Training;

/// <summary>Outcome of a <see cref="GillTrainer"/> run.</summary>
/// <param name="StepsCompleted">Optimizer steps done in total (including steps restored from a checkpoint).</param>
/// <param name="ResumedFromStep">Step the run resumed from (0 for a fresh start).</param>
/// <param name="Cancelled">Whether the cancellation token stopped the run before <see cref="GillTrainingOptions.TotalSteps"/>.</param>
/// <param name="LastLosses">Loss terms of the last step run in this call, if any.</param>
/// <param name="LastCheckpoint">Folder of the newest checkpoint written in this call, if any.</param>
public sealed record GillTrainingResult(long StepsCompleted, long ResumedFromStep, bool Cancelled, GillLossValues? LastLosses, string? LastCheckpoint);

/// <summary>
/// GILL's training loop over a batch source: groups <see cref="GillTrainingOptions.GradAccumulationSteps"/> batches per
/// optimizer step, reports progress, stops cleanly between steps on cancellation, and writes atomic checkpoints
/// (trainable weights, optimizer state, scheduler step, the coin-flip and torch generator states, and the data position)
/// from which a resumed run reproduces the uninterrupted one.
/// </summary>
public sealed class GillTrainer : IDisposable
{
    private const string CheckpointPrefix = "step-";
    private const string StateFile = "trainer_state.json";
    private const string WeightsFile = "model.safetensors";
    private const string OptimizerFile = "optimizer.bin";
    private const string ConfigFile = "model_args.json";

    private readonly GillTrainingStep _step;

    /// <summary>Prepares training of <paramref name="model"/> with <paramref name="options"/> (validated; copied).</summary>
    public GillTrainer(GillCoreModel model, GillTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (options.TrainLanguageModel && options.CheckpointDirectory is not null)
            throw new NotSupportedException("Checkpoints hold GILL's trainable heads only, not language model weights: TrainLanguageModel cannot be combined with CheckpointDirectory.");
        Options = options.Clone();
        _step = new GillTrainingStep(model, Options);
    }

    /// <summary>The options snapshot.</summary>
    public GillTrainingOptions Options { get; }

    /// <summary>The model being trained.</summary>
    public GillCoreModel Model => _step.Model;

    /// <summary>The step object (optimizer, scheduler position).</summary>
    public GillTrainingStep StepRunner => _step;

    /// <summary>Trains over batches that are re-enumerated each epoch.</summary>
    public GillTrainingResult Train(IEnumerable<GillBatch> batches, IProgress<GillTrainingProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Train(new RepeatingBatchSource(batches), progress, cancellationToken);

    /// <summary>
    /// Runs until <see cref="GillTrainingOptions.TotalSteps"/> optimizer steps are done, resuming from the newest checkpoint
    /// when <see cref="GillTrainingOptions.Resume"/> is set and one exists. Cancellation is checked before each step; a
    /// cancelled run writes a checkpoint (when a folder is configured) and returns with <c>Cancelled</c> set.
    /// </summary>
    public GillTrainingResult Train(IGillBatchSource source, IProgress<GillTrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        var o = Options;
        int epoch = 0;
        long consumedInEpoch = 0;
        long resumedFrom = 0;
        torch.random.manual_seed(o.Seed);
        if (o.CheckpointDirectory is not null && o.Resume && LatestCheckpoint(o.CheckpointDirectory) is { } latest)
        {
            var state = LoadCheckpoint(latest);
            epoch = state.Epoch;
            consumedInEpoch = state.BatchesConsumedInEpoch;
            resumedFrom = state.Step;
        }

        GillLossValues? lastLosses = null;
        string? lastCheckpoint = null;
        bool cancelled = false;
        IEnumerator<GillBatch>? enumerator = null;
        try
        {
            while (_step.StepsTaken < o.TotalSteps)
            {
                if (cancellationToken.IsCancellationRequested) { cancelled = true; break; }
                var watch = Stopwatch.StartNew();
                GillStepResult result;
                using (var scope = torch.NewDisposeScope())
                {
                    var micro = new List<GillBatch>(o.GradAccumulationSteps);
                    while (micro.Count < o.GradAccumulationSteps)
                    {
                        if (enumerator is null)
                        {
                            enumerator = source.GetBatches(epoch).GetEnumerator();
                            for (long skip = 0; skip < consumedInEpoch; skip++)
                                if (!enumerator.MoveNext())
                                    throw new InvalidOperationException($"The batch source yields fewer batches in epoch {epoch} than the checkpoint consumed ({consumedInEpoch}); it must be deterministic to resume.");
                        }
                        if (enumerator.MoveNext())
                        {
                            micro.Add(enumerator.Current ?? throw new InvalidOperationException($"The batch source yielded null (epoch {epoch}, batch {consumedInEpoch})."));
                            consumedInEpoch++;
                        }
                        else
                        {
                            enumerator.Dispose();
                            enumerator = null;
                            if (consumedInEpoch == 0) throw new InvalidOperationException($"The batch source yielded no batches for epoch {epoch}.");
                            epoch++;
                            consumedInEpoch = 0;
                        }
                    }
                    result = _step.Step(micro);
                }
                lastLosses = result.Losses;
                double seconds = Math.Max(watch.Elapsed.TotalSeconds, 1e-9);
                progress?.Report(new GillTrainingProgress("joint", result.Step, o.TotalSteps, result.Losses, result.LearningRate, result.Examples / seconds, epoch));
                if (o.CheckpointDirectory is not null && o.CheckpointEvery > 0 && result.Step % o.CheckpointEvery == 0)
                    lastCheckpoint = SaveCheckpoint(o.CheckpointDirectory, epoch, consumedInEpoch);
            }
        }
        finally
        {
            enumerator?.Dispose();
        }
        if (o.CheckpointDirectory is not null && _step.StepsTaken > 0 &&
            !Directory.Exists(Path.Combine(o.CheckpointDirectory, CheckpointName(_step.StepsTaken))))
            lastCheckpoint = SaveCheckpoint(o.CheckpointDirectory, epoch, consumedInEpoch);
        return new GillTrainingResult(_step.StepsTaken, resumedFrom, cancelled, lastLosses, lastCheckpoint);
    }

    /// <summary>The newest complete checkpoint folder under <paramref name="directory"/>, or null.</summary>
    public static string? LatestCheckpoint(string directory)
    {
        if (!Directory.Exists(directory)) return null;
        return Directory.GetDirectories(directory, CheckpointPrefix + "*")
            .Select(d => (Dir: d, Step: ParseStep(Path.GetFileName(d))))
            .Where(x => x.Step is not null && File.Exists(Path.Combine(x.Dir, StateFile)))
            .OrderByDescending(x => x.Step)
            .Select(x => x.Dir)
            .FirstOrDefault();
    }

    private static long? ParseStep(string name) =>
        name.StartsWith(CheckpointPrefix, StringComparison.Ordinal) &&
        long.TryParse(name.AsSpan(CheckpointPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : null;

    private static string CheckpointName(long step) => CheckpointPrefix + step.ToString("D8", CultureInfo.InvariantCulture);

    private string SaveCheckpoint(string directory, int epoch, long consumedInEpoch)
    {
        var path = Path.Combine(directory, CheckpointName(_step.StepsTaken));
        var rng = torch.random.get_rng_state();
        byte[] rngBytes;
        using (rng) rngBytes = rng.bytes.ToArray();
        var state = new CheckpointState
        {
            Step = _step.StepsTaken,
            Epoch = epoch,
            BatchesConsumedInEpoch = consumedInEpoch,
            CoinState = _step.CoinState.ToString(CultureInfo.InvariantCulture),
            TorchRngState = Convert.ToBase64String(rngBytes),
            Seed = Options.Seed,
        };
        AtomicFile.WriteDirectory(path, tmp =>
        {
            GillWeights.Save(Model.Heads, Path.Combine(tmp, WeightsFile));
            Model.Config.Save(Path.Combine(tmp, ConfigFile));
            using (var fs = File.Create(Path.Combine(tmp, OptimizerFile)))
            using (var w = new BinaryWriter(fs))
            {
                _step.Optimizer.save_state_dict(w);
                w.Flush();
                fs.Flush(true);
            }
            File.WriteAllText(Path.Combine(tmp, StateFile), JsonSerializer.Serialize(state, StateJson));
        });
        PruneCheckpoints(directory);
        return path;
    }

    private CheckpointState LoadCheckpoint(string path)
    {
        CheckpointState state;
        try
        {
            state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(Path.Combine(path, StateFile)), StateJson)
                    ?? throw new InvalidDataException("empty state");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Checkpoint state '{Path.Combine(path, StateFile)}' is not valid: {e.Message}", e);
        }
        var saved = GillConfig.Load(Path.Combine(path, ConfigFile));
        if (saved.ToJson() != Model.Config.ToJson())
            throw new InvalidDataException($"Checkpoint '{path}' was written for a different GILL config.");
        GillWeights.Load(Model.Heads, Path.Combine(path, WeightsFile));
        using (var fs = File.OpenRead(Path.Combine(path, OptimizerFile)))
        using (var r = new BinaryReader(fs))
            _step.Optimizer.load_state_dict(r);
        _step.StepsTaken = state.Step;
        _step.CoinState = ulong.Parse(state.CoinState, CultureInfo.InvariantCulture);
        var bytes = Convert.FromBase64String(state.TorchRngState);
        using (var t = torch.tensor(bytes, ScalarType.Byte)) torch.random.set_rng_state(t);
        return state;
    }

    private void PruneCheckpoints(string directory)
    {
        var all = Directory.GetDirectories(directory, CheckpointPrefix + "*")
            .Select(d => (Dir: d, Step: ParseStep(Path.GetFileName(d))))
            .Where(x => x.Step is not null)
            .OrderByDescending(x => x.Step)
            .ToList();
        foreach (var (dir, _) in all.Skip(Options.KeepCheckpoints))
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private static readonly JsonSerializerOptions StateJson = new() { WriteIndented = true };

    private sealed class CheckpointState
    {
        [JsonPropertyName("step")] public long Step { get; set; }
        [JsonPropertyName("epoch")] public int Epoch { get; set; }
        [JsonPropertyName("batches_consumed_in_epoch")] public long BatchesConsumedInEpoch { get; set; }
        [JsonPropertyName("coin_state")] public string CoinState { get; set; } = "0";
        [JsonPropertyName("torch_rng_state")] public string TorchRngState { get; set; } = "";
        [JsonPropertyName("seed")] public long Seed { get; set; }
    }

    /// <inheritdoc />
    public void Dispose() => _step.Dispose();
}
