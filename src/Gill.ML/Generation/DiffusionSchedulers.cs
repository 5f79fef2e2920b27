using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Generation;

/// <summary>
/// A diffusers scheduler configuration (scheduler_config.json). Unknown keys are ignored; missing keys take the
/// diffusers defaults of the named class.
/// </summary>
public sealed record DiffusionSchedulerConfig
{
    /// <summary>"DDIMScheduler" or "PNDMScheduler".</summary>
    public string ClassName { get; init; } = "PNDMScheduler";
    public int NumTrainTimesteps { get; init; } = 1000;
    public double BetaStart { get; init; } = 0.0001;
    public double BetaEnd { get; init; } = 0.02;
    /// <summary>"linear" or "scaled_linear".</summary>
    public string BetaSchedule { get; init; } = "linear";
    public bool SetAlphaToOne { get; init; } = true;
    public int StepsOffset { get; init; }
    /// <summary>"epsilon", "v_prediction" or (DDIM only) "sample".</summary>
    public string PredictionType { get; init; } = "epsilon";
    /// <summary>"leading", "trailing" or "linspace".</summary>
    public string TimestepSpacing { get; init; } = "leading";
    /// <summary>DDIM: clamp the predicted x0 to ±<see cref="ClipSampleRange"/>.</summary>
    public bool ClipSample { get; init; } = true;
    public double ClipSampleRange { get; init; } = 1.0;
    /// <summary>PNDM: skip the Runge-Kutta warm-up and run PLMS steps only.</summary>
    public bool SkipPrkSteps { get; init; }

    /// <summary>
    /// Reads a scheduler_config.json file. With <paramref name="asClass"/> the same keys configure another scheduler
    /// class (as diffusers' <c>OtherScheduler.from_config(config)</c>): keys the file lacks take that class's defaults.
    /// </summary>
    public static DiffusionSchedulerConfig Load(string path, string? asClass = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Scheduler config not found: {path}", path);
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var r = doc.RootElement;
        var cls = asClass ?? Str(r, "_class_name") ?? throw new InvalidDataException($"{path}: missing \"_class_name\".");
        bool isDdim = cls == "DDIMScheduler";
        var cfg = new DiffusionSchedulerConfig
        {
            ClassName = cls,
            NumTrainTimesteps = Int(r, "num_train_timesteps") ?? 1000,
            BetaStart = Dbl(r, "beta_start") ?? 0.0001,
            BetaEnd = Dbl(r, "beta_end") ?? 0.02,
            BetaSchedule = Str(r, "beta_schedule") ?? "linear",
            SetAlphaToOne = Bool(r, "set_alpha_to_one") ?? true,
            StepsOffset = Int(r, "steps_offset") ?? 0,
            PredictionType = Str(r, "prediction_type") ?? "epsilon",
            TimestepSpacing = Str(r, "timestep_spacing") ?? "leading",
            ClipSample = Bool(r, "clip_sample") ?? isDdim,
            ClipSampleRange = Dbl(r, "clip_sample_range") ?? 1.0,
            SkipPrkSteps = Bool(r, "skip_prk_steps") ?? false,
        };
        if (r.TryGetProperty("trained_betas", out var tb) && tb.ValueKind != JsonValueKind.Null)
            throw new NotSupportedException($"{path}: \"trained_betas\" is not supported; use beta_schedule linear or scaled_linear.");
        if (Bool(r, "thresholding") == true)
            throw new NotSupportedException($"{path}: \"thresholding\": true is not supported.");
        if (Bool(r, "rescale_betas_zero_snr") == true)
            throw new NotSupportedException($"{path}: \"rescale_betas_zero_snr\": true is not supported.");
        return cfg;
    }

    private static string? Str(JsonElement r, string k) => r.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    private static int? Int(JsonElement r, string k) => r.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : null;
    private static double? Dbl(JsonElement r, string k) => r.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
    private static bool? Bool(JsonElement r, string k) => r.TryGetProperty(k, out var v) && (v.ValueKind == JsonValueKind.True || v.ValueKind == JsonValueKind.False) ? v.GetBoolean() : null;
}

/// <summary>
/// A denoising scheduler with the diffusers semantics (float32 tensor math on the noise schedule, in the same order of
/// operations). Stateful: create one per generation with <see cref="Create"/>, call <see cref="SetTimesteps"/>, then
/// <see cref="Step"/> once per UNet call.
/// </summary>
public abstract class DiffusionScheduler : IDisposable
{
    private protected DiffusionScheduler(DiffusionSchedulerConfig config)
    {
        Config = config;
        if (config.NumTrainTimesteps <= 0) throw new ArgumentException($"num_train_timesteps must be positive, got {config.NumTrainTimesteps}.");
        using var scope = torch.NewDisposeScope();
        Tensor betas = config.BetaSchedule switch
        {
            "linear" => torch.linspace(config.BetaStart, config.BetaEnd, config.NumTrainTimesteps, ScalarType.Float32),
            "scaled_linear" => torch.linspace(Math.Sqrt(config.BetaStart), Math.Sqrt(config.BetaEnd), config.NumTrainTimesteps, ScalarType.Float32).pow(2),
            _ => throw new NotSupportedException($"beta_schedule \"{config.BetaSchedule}\" is not supported (linear, scaled_linear)."),
        };
        var alphas = 1.0f - betas;
        AlphasCumprod = torch.cumprod(alphas, 0).DetachFromDisposeScope();
        FinalAlphaCumprod = (config.SetAlphaToOne ? torch.tensor(1.0f) : AlphasCumprod[0].clone()).DetachFromDisposeScope();
    }

    /// <summary>The configuration.</summary>
    public DiffusionSchedulerConfig Config { get; }

    /// <summary>ᾱ_t for t = 0…T−1 (float32).</summary>
    public Tensor AlphasCumprod { get; }

    /// <summary>ᾱ used past the last step: 1 with set_alpha_to_one, else ᾱ_0.</summary>
    public Tensor FinalAlphaCumprod { get; }

    /// <summary>Standard deviation of the initial noise (1 for DDIM and PNDM).</summary>
    public virtual double InitNoiseSigma => 1.0;

    /// <summary>Number of inference steps set by <see cref="SetTimesteps"/>.</summary>
    public int NumInferenceSteps { get; private protected set; }

    /// <summary>Timesteps of the UNet calls (PNDM repeats one), valid after <see cref="SetTimesteps"/>.</summary>
    public long[] Timesteps { get; private protected set; } = Array.Empty<long>();

    /// <summary>Sets the number of inference steps and computes <see cref="Timesteps"/>.</summary>
    public abstract long[] SetTimesteps(int numInferenceSteps);

    /// <summary>One scheduler step: the sample before the next UNet call, from the (guided) model output.</summary>
    public abstract Tensor Step(Tensor modelOutput, long timestep, Tensor sample);

    /// <summary>Creates the scheduler named by <paramref name="config"/>.ClassName.</summary>
    public static DiffusionScheduler Create(DiffusionSchedulerConfig config) => config.ClassName switch
    {
        "DDIMScheduler" => new DdimScheduler(config),
        "PNDMScheduler" => new PndmScheduler(config),
        _ => throw new NotSupportedException($"Scheduler \"{config.ClassName}\" is not supported (DDIMScheduler, PNDMScheduler)."),
    };

    /// <summary>The base timesteps of diffusers' timestep spacings, ascending for "leading" before reversal.</summary>
    private protected long[] SpacedTimesteps(int steps)
    {
        int n = Config.NumTrainTimesteps;
        if (steps <= 0 || steps > n) throw new ArgumentOutOfRangeException(nameof(steps), $"Steps must be in 1..{n}, got {steps}.");
        var ts = new long[steps];
        switch (Config.TimestepSpacing)
        {
            case "leading":
                {
                    int ratio = n / steps;
                    for (int i = 0; i < steps; i++) ts[i] = (long)(steps - 1 - i) * ratio + Config.StepsOffset;
                    break;
                }
            case "trailing":
                {
                    double ratio = n / (double)steps;
                    for (int i = 0; i < steps; i++) ts[i] = (long)Math.Round(n - i * ratio, MidpointRounding.ToEven) - 1;
                    break;
                }
            case "linspace":
                {
                    for (int i = 0; i < steps; i++)
                    {
                        double v = steps == 1 ? 0 : (n - 1) * (double)(steps - 1 - i) / (steps - 1);
                        ts[i] = (long)Math.Round(v, MidpointRounding.ToEven);
                    }
                    break;
                }
            default:
                throw new NotSupportedException($"timestep_spacing \"{Config.TimestepSpacing}\" is not supported (leading, trailing, linspace).");
        }
        return ts;
    }

    private protected Tensor AlphaAt(long t) => t >= 0 ? AlphasCumprod[t] : FinalAlphaCumprod.alias();

    /// <inheritdoc/>
    public virtual void Dispose()
    {
        AlphasCumprod.Dispose();
        FinalAlphaCumprod.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>DDIM with eta 0 (deterministic), as diffusers' DDIMScheduler.</summary>
public sealed class DdimScheduler : DiffusionScheduler
{
    /// <summary>Creates the scheduler from its configuration.</summary>
    public DdimScheduler(DiffusionSchedulerConfig config) : base(config)
    {
        if (config.PredictionType is not ("epsilon" or "v_prediction" or "sample"))
            throw new NotSupportedException($"DDIM prediction_type \"{config.PredictionType}\" is not supported (epsilon, v_prediction, sample).");
    }

    /// <inheritdoc/>
    public override long[] SetTimesteps(int numInferenceSteps)
    {
        Timesteps = SpacedTimesteps(numInferenceSteps);
        NumInferenceSteps = numInferenceSteps;
        return Timesteps;
    }

    /// <inheritdoc/>
    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample)
    {
        if (NumInferenceSteps == 0) throw new InvalidOperationException("Call SetTimesteps before Step.");
        using var scope = torch.NewDisposeScope();
        long prev = timestep - Config.NumTrainTimesteps / NumInferenceSteps;
        var alphaProdT = AlphaAt(timestep);
        var alphaProdTPrev = AlphaAt(prev);
        var betaProdT = 1.0f - alphaProdT;

        Tensor predOriginal, predEpsilon;
        switch (Config.PredictionType)
        {
            case "epsilon":
                predOriginal = (sample - betaProdT.pow(0.5) * modelOutput) / alphaProdT.pow(0.5);
                predEpsilon = modelOutput;
                break;
            case "sample":
                predOriginal = modelOutput;
                predEpsilon = (sample - alphaProdT.pow(0.5) * predOriginal) / betaProdT.pow(0.5);
                break;
            default: // v_prediction
                predOriginal = alphaProdT.pow(0.5) * sample - betaProdT.pow(0.5) * modelOutput;
                predEpsilon = alphaProdT.pow(0.5) * modelOutput + betaProdT.pow(0.5) * sample;
                break;
        }
        if (Config.ClipSample)
            predOriginal = predOriginal.clamp(-Config.ClipSampleRange, Config.ClipSampleRange);

        // eta = 0: the noise term's standard deviation is zero.
        var direction = (1.0f - alphaProdTPrev).pow(0.5) * predEpsilon;
        var prevSample = alphaProdTPrev.pow(0.5) * predOriginal + direction;
        return prevSample.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// PNDM as diffusers' PNDMScheduler with skip_prk_steps (pseudo linear multistep; the first timestep is evaluated
/// twice, so N steps take N+1 UNet calls).
/// </summary>
public sealed class PndmScheduler : DiffusionScheduler
{
    private readonly List<Tensor> _ets = new();
    private Tensor? _curSample;
    private int _counter;

    /// <summary>Creates the scheduler from its configuration.</summary>
    public PndmScheduler(DiffusionSchedulerConfig config) : base(config)
    {
        if (!config.SkipPrkSteps)
            throw new NotSupportedException("PNDM without skip_prk_steps (Runge-Kutta warm-up) is not supported; Stable Diffusion configs set skip_prk_steps true.");
        if (config.PredictionType is not ("epsilon" or "v_prediction"))
            throw new NotSupportedException($"PNDM prediction_type \"{config.PredictionType}\" is not supported (epsilon, v_prediction).");
    }

    /// <inheritdoc/>
    public override long[] SetTimesteps(int numInferenceSteps)
    {
        // Ascending base timesteps t_0 < … < t_{n-1}; PLMS order: reversed [t_0 … t_{n-2}, t_{n-2}, t_{n-1}].
        var desc = SpacedTimesteps(numInferenceSteps);
        var asc = desc.Reverse().ToArray();
        var plms = new List<long>(numInferenceSteps + 1);
        plms.AddRange(asc.Take(asc.Length - 1));
        if (asc.Length >= 2) plms.Add(asc[^2]);
        plms.Add(asc[^1]);
        plms.Reverse();
        Timesteps = plms.ToArray();
        NumInferenceSteps = numInferenceSteps;
        ResetState();
        return Timesteps;
    }

    /// <inheritdoc/>
    public override Tensor Step(Tensor modelOutput, long timestep, Tensor sample)
    {
        if (NumInferenceSteps == 0) throw new InvalidOperationException("Call SetTimesteps before Step.");
        using var scope = torch.NewDisposeScope();
        int ratio = Config.NumTrainTimesteps / NumInferenceSteps;
        long prev = timestep - ratio;
        if (_counter != 1)
        {
            _ets.Add(modelOutput.detach().clone().DetachFromDisposeScope());
            while (_ets.Count > 4) { _ets[0].Dispose(); _ets.RemoveAt(0); }
        }
        else
        {
            prev = timestep;
            timestep += ratio;
        }

        Tensor eps;
        if (_ets.Count == 1 && _counter == 0)
        {
            eps = modelOutput;
            _curSample?.Dispose();
            _curSample = sample.detach().clone().DetachFromDisposeScope();
        }
        else if (_ets.Count == 1 && _counter == 1)
        {
            eps = (modelOutput + _ets[^1]) / 2;
            sample = _curSample!.alias();
            _curSample.Dispose();
            _curSample = null;
        }
        else if (_ets.Count == 2)
            eps = (3 * _ets[^1] - _ets[^2]) / 2;
        else if (_ets.Count == 3)
            eps = (23 * _ets[^1] - 16 * _ets[^2] + 5 * _ets[^3]) / 12;
        else
            eps = (1.0 / 24) * (55 * _ets[^1] - 59 * _ets[^2] + 37 * _ets[^3] - 9 * _ets[^4]);

        var prevSample = PrevSample(sample, timestep, prev, eps);
        _counter++;
        return prevSample.MoveToOuterDisposeScope();
    }

    // PNDM paper eq. (9): x_{t-δ} from x_t and ε.
    private Tensor PrevSample(Tensor sample, long timestep, long prevTimestep, Tensor modelOutput)
    {
        var alphaProdT = AlphaAt(timestep);
        var alphaProdTPrev = AlphaAt(prevTimestep);
        var betaProdT = 1.0f - alphaProdT;
        var betaProdTPrev = 1.0f - alphaProdTPrev;
        if (Config.PredictionType == "v_prediction")
            modelOutput = alphaProdT.pow(0.5) * modelOutput + betaProdT.pow(0.5) * sample;
        var sampleCoeff = (alphaProdTPrev / alphaProdT).pow(0.5);
        var denom = alphaProdT * betaProdTPrev.pow(0.5) + (alphaProdT * betaProdT * alphaProdTPrev).pow(0.5);
        return sampleCoeff * sample - (alphaProdTPrev - alphaProdT) * modelOutput / denom;
    }

    private void ResetState()
    {
        foreach (var e in _ets) e.Dispose();
        _ets.Clear();
        _curSample?.Dispose();
        _curSample = null;
        _counter = 0;
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        ResetState();
        base.Dispose();
    }
}
