using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Generation;

/// <summary>Where ONNX Runtime executes the pipeline's models.</summary>
public enum OnnxExecutionProvider
{
    /// <summary>The CPU execution provider.</summary>
    Cpu,
    /// <summary>The CUDA execution provider (needs the GPU build of the ONNX Runtime native package).</summary>
    Cuda,
}

/// <summary>Options for loading an <see cref="OnnxStableDiffusion"/> pipeline.</summary>
public sealed class OnnxStableDiffusionOptions
{
    /// <summary>Execution provider (default CPU). CUDA fails at load with a clear message when unavailable.</summary>
    public OnnxExecutionProvider ExecutionProvider { get; set; } = OnnxExecutionProvider.Cpu;

    /// <summary>CUDA device ordinal for <see cref="OnnxExecutionProvider.Cuda"/>.</summary>
    public int CudaDeviceId { get; set; }

    /// <summary>Intra-op threads per session (default: ONNX Runtime's choice).</summary>
    public int? IntraOpNumThreads { get; set; }

    /// <summary>
    /// A CLIP tokenizer for the text-prompt path: maps a prompt to the text encoder's input ids (padded to the model
    /// length the way Stable Diffusion pads, with the end-of-text id).
    /// </summary>
    public Func<string, long[]>? Tokenizer { get; set; }

    /// <summary>
    /// Input ids of the empty prompt, whose text-encoder output is the default negative embedding. Default: from
    /// <see cref="Tokenizer"/>, else [bos, eos, pad…] read from tokenizer/vocab.json and the special-tokens files.
    /// </summary>
    public long[]? EmptyPromptInputIds { get; set; }
}

/// <summary>
/// Stable Diffusion from an ONNX export folder in the Optimum / diffusers layout (model_index.json,
/// text_encoder/model.onnx, unet/model.onnx, vae_decoder/model.onnx with config.json, scheduler/scheduler_config.json,
/// optionally tokenizer/), run with ONNX Runtime and DDIM or PNDM schedulers. Generates from prompt embeddings
/// [B,L,m] (GILL's path) or from text through the text encoder (the Stable Diffusion baseline).
/// </summary>
public sealed class OnnxStableDiffusion : IImageGenerator
{
    private readonly InferenceSession _textEncoder, _unet, _vae;
    private readonly string _textIn, _textOut, _unetSample, _unetTimestep, _unetContext, _unetOut, _vaeIn, _vaeOut;
    private readonly TensorElementType _textInType, _sampleType, _timestepType, _contextType, _vaeInType;
    private readonly bool _timestepIsScalar;
    private readonly int[] _sampleDims;
    private readonly OnnxStableDiffusionOptions _options;
    private readonly Lazy<int> _vaeScale;
    private readonly object _emptyLock = new();
    private Tensor? _emptyPromptEmbedding;
    private readonly int? _defaultSampleSize;
    private bool _disposed;

    private OnnxStableDiffusion(string folder, OnnxStableDiffusionOptions options)
    {
        Folder = folder;
        _options = options;
        var textPath = Require(folder, "text_encoder", "model.onnx");
        var unetPath = Require(folder, "unet", "model.onnx");
        var vaePath = Require(folder, "vae_decoder", "model.onnx");
        var vaeConfigPath = Require(folder, "vae_decoder", "config.json");
        var schedulerPath = Require(folder, "scheduler", "scheduler_config.json");

        SchedulerConfig = DiffusionSchedulerConfig.Load(schedulerPath);
        VaeScalingFactor = JsonNumber(vaeConfigPath, "scaling_factor") ?? 0.18215;

        using var so = CreateSessionOptions(options);
        try
        {
            _textEncoder = new InferenceSession(textPath, so);
            _unet = new InferenceSession(unetPath, so);
            _vae = new InferenceSession(vaePath, so);
        }
        catch (OnnxRuntimeException e)
        {
            _textEncoder?.Dispose();
            _unet?.Dispose();
            throw new InvalidDataException($"Cannot load the ONNX models of {folder}: {e.Message}", e);
        }

        try
        {
            // Text encoder: integer ids in, last_hidden_state out.
            (_textIn, var textInMeta) = Input(_textEncoder, textPath, "input_ids");
            _textInType = textInMeta.ElementDataType;
            if (_textInType is not (TensorElementType.Int32 or TensorElementType.Int64))
                throw new InvalidDataException($"{textPath}: input '{_textIn}' has element type {_textInType}; expected int32 or int64 token ids.");
            _textOut = Output(_textEncoder, "last_hidden_state");

            // UNet: sample, timestep, encoder_hidden_states.
            var unetInputs = _unet.InputMetadata;
            foreach (var name in unetInputs.Keys)
                if (name is not ("sample" or "timestep" or "encoder_hidden_states"))
                    throw new NotSupportedException($"{unetPath}: unexpected UNet input '{name}' (supported: sample, timestep, encoder_hidden_states).");
            (_unetSample, var sampleMeta) = Input(_unet, unetPath, "sample");
            (_unetTimestep, var timestepMeta) = Input(_unet, unetPath, "timestep");
            (_unetContext, var contextMeta) = Input(_unet, unetPath, "encoder_hidden_states");
            _sampleType = sampleMeta.ElementDataType;
            _sampleDims = sampleMeta.Dimensions;
            _timestepType = timestepMeta.ElementDataType;
            _contextType = contextMeta.ElementDataType;
            _timestepIsScalar = timestepMeta.Dimensions.Length == 0;
            if (timestepMeta.Dimensions.Length > 1 || (timestepMeta.Dimensions.Length == 1 && timestepMeta.Dimensions[0] > 1))
                throw new NotSupportedException($"{unetPath}: timestep input shape [{string.Join(",", timestepMeta.Dimensions)}] is not supported (scalar or [1]).");
            _unetOut = Output(_unet, "out_sample");

            (_vaeIn, var vaeMeta) = Input(_vae, vaePath, "latent_sample");
            _vaeInType = vaeMeta.ElementDataType;
            _vaeOut = Output(_vae, "sample");

            var textConfig = Path.Combine(folder, "text_encoder", "config.json");
            var unetConfig = Path.Combine(folder, "unet", "config.json");
            var tokConfig = Path.Combine(folder, "tokenizer", "tokenizer_config.json");

            int seq = Known(contextMeta.Dimensions, 1)
                ?? Known(textInMeta.Dimensions, 1)
                ?? PositiveInt(JsonNumber(tokConfig, "model_max_length"))
                ?? PositiveInt(JsonNumber(textConfig, "max_position_embeddings"))
                ?? 0;
            int dim = Known(contextMeta.Dimensions, 2)
                ?? Known(_textEncoder.OutputMetadata[_textOut].Dimensions, 2)
                ?? PositiveInt(JsonNumber(textConfig, "hidden_size"))
                ?? PositiveInt(JsonNumber(unetConfig, "cross_attention_dim"))
                ?? 0;
            ConditioningShape = new ConditioningShape(seq, dim);

            LatentChannels = Known(sampleMeta.Dimensions, 1)
                ?? Known(vaeMeta.Dimensions, 1)
                ?? PositiveInt(JsonNumber(vaeConfigPath, "latent_channels"))
                ?? PositiveInt(JsonNumber(unetConfig, "in_channels"))
                ?? 4;

            var blocks = JsonArrayLength(vaeConfigPath, "block_out_channels");
            int? staticScale = Known(vaeMeta.Dimensions, 2) is int hin && Known(_vae.OutputMetadata[_vaeOut].Dimensions, 2) is int hout && hout % hin == 0 ? hout / hin : null;
            _vaeScale = blocks is int n && n > 0 ? new Lazy<int>(1 << (n - 1))
                : staticScale is int s ? new Lazy<int>(s)
                : new Lazy<int>(ProbeVaeScale, LazyThreadSafetyMode.ExecutionAndPublication);
            _defaultSampleSize = PositiveInt(JsonNumber(unetConfig, "sample_size")) ?? Known(sampleMeta.Dimensions, 2);
        }
        catch
        {
            _textEncoder.Dispose();
            _unet.Dispose();
            _vae.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads an ONNX Stable Diffusion export folder. Throws <see cref="FileNotFoundException"/> naming the first missing
    /// part (model_index.json, text_encoder/model.onnx, unet/model.onnx, vae_decoder/model.onnx, vae_decoder/config.json,
    /// scheduler/scheduler_config.json).
    /// </summary>
    public static OnnxStableDiffusion Load(string folder, OnnxStableDiffusionOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"ONNX Stable Diffusion folder not found: {folder}");
        Require(folder, "model_index.json");
        return new OnnxStableDiffusion(Path.GetFullPath(folder), options ?? new OnnxStableDiffusionOptions());
    }

    /// <summary>The export folder.</summary>
    public string Folder { get; }

    /// <inheritdoc/>
    public ConditioningShape ConditioningShape { get; }

    /// <summary>Latent channels C of the UNet / VAE (4 in Stable Diffusion).</summary>
    public int LatentChannels { get; }

    /// <summary>The VAE's spatial upsampling (8 in Stable Diffusion): image size = latent size × this.</summary>
    public int VaeScaleFactor => _vaeScale.Value;

    /// <summary>Latents are divided by this before decoding (vae_decoder/config.json scaling_factor).</summary>
    public double VaeScalingFactor { get; }

    /// <summary>The configured scheduler (scheduler/scheduler_config.json).</summary>
    public DiffusionSchedulerConfig SchedulerConfig { get; }

    /// <summary>Default output size in pixels: unet sample_size × VAE scale, else 512.</summary>
    public int DefaultImageSize => _defaultSampleSize is int s ? s * VaeScaleFactor : 512;

    /// <summary>The scheduler configuration a generation with <paramref name="kind"/> uses.</summary>
    public DiffusionSchedulerConfig GetSchedulerConfig(SchedulerKind kind)
    {
        string? cls = kind switch
        {
            SchedulerKind.Default => null,
            SchedulerKind.Ddim => "DDIMScheduler",
            SchedulerKind.Pndm => "PNDMScheduler",
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown scheduler kind."),
        };
        if (cls is null || cls == SchedulerConfig.ClassName) return SchedulerConfig;
        // A dedicated file (ddim_scheduler_config.json / pndm_scheduler_config.json) wins over re-reading the default one.
        var dedicated = Path.Combine(Folder, "scheduler", (kind == SchedulerKind.Ddim ? "ddim" : "pndm") + "_scheduler_config.json");
        return File.Exists(dedicated)
            ? DiffusionSchedulerConfig.Load(dedicated, cls)
            : DiffusionSchedulerConfig.Load(Path.Combine(Folder, "scheduler", "scheduler_config.json"), cls);
    }

    /// <summary>Runs the text encoder on token ids [B,P] and returns its last hidden state [B,P,m] (float32).</summary>
    public Tensor EncodeText(Tensor inputIds, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dim() != 2)
            throw new ArgumentException($"input_ids must have shape [B,P]; got [{string.Join(",", inputIds.shape)}].", nameof(inputIds));
        if (inputIds.is_floating_point())
            throw new ArgumentException($"input_ids must be integer token ids; got {inputIds.dtype}.", nameof(inputIds));
        var dims = _textEncoder.InputMetadata[_textIn].Dimensions;
        if (Known(dims, 1) is int p && p != inputIds.shape[1])
            throw new ArgumentException($"input_ids has {inputIds.shape[1]} tokens; the text encoder expects {p}.", nameof(inputIds));
        using var ids = OrtTensors.ToOrt(inputIds, _textInType, "input_ids");
        using var outputs = Run(_textEncoder, new[] { _textIn }, new[] { ids }, _textOut, cancellationToken);
        return OrtTensors.ToTorchFloat(outputs[0], $"text_encoder.{_textOut}");
    }

    /// <summary>Tokenizes <paramref name="prompt"/> with the configured tokenizer and encodes it: [1,L,m].</summary>
    public Tensor EncodePrompt(string prompt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var tokenizer = _options.Tokenizer
            ?? throw new InvalidOperationException("No tokenizer configured: set OnnxStableDiffusionOptions.Tokenizer to encode text prompts, or pass token ids to EncodeText.");
        var tokens = tokenizer(prompt) ?? throw new InvalidOperationException("The tokenizer returned null ids.");
        using var ids = torch.tensor(tokens, new long[] { 1, tokens.Length }, ScalarType.Int64);
        return EncodeText(ids, cancellationToken);
    }

    /// <summary>The text encoder's embedding of the empty prompt [1,L,m]: the default negative embedding (a new tensor).</summary>
    public Tensor EncodeEmptyPrompt(CancellationToken cancellationToken = default)
    {
        lock (_emptyLock)
        {
            if (_emptyPromptEmbedding is null)
            {
                var ids = EmptyPromptIds();
                using var t = torch.tensor(ids, new long[] { 1, ids.Length }, ScalarType.Int64);
                _emptyPromptEmbedding = EncodeText(t, cancellationToken).DetachFromDisposeScope();
            }
            return _emptyPromptEmbedding.clone();
        }
    }

    /// <summary>Generates from a text prompt through the text encoder (needs <see cref="OnnxStableDiffusionOptions.Tokenizer"/>).</summary>
    public GeneratedImages GenerateFromText(string prompt, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        using var scope = torch.NewDisposeScope();
        var embeddings = EncodePrompt(prompt, cancellationToken);
        return Generate(embeddings, options, progress, cancellationToken);
    }

    /// <inheritdoc/>
    public GeneratedImages Generate(float[] promptEmbeddings, long[] shape, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(promptEmbeddings);
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Length != 3 || shape.Any(d => d <= 0))
            throw new ArgumentException($"Prompt embeddings shape must be [B,L,m] with positive sizes; got [{string.Join(",", shape)}] (expected {ConditioningShape}).", nameof(shape));
        if (shape[0] * shape[1] * shape[2] != promptEmbeddings.Length)
            throw new ArgumentException($"Prompt embeddings have {promptEmbeddings.Length} floats, but shape [{string.Join(",", shape)}] needs {shape[0] * shape[1] * shape[2]}.", nameof(promptEmbeddings));
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(promptEmbeddings, shape);
        return Generate(t, options, progress, cancellationToken);
    }

    /// <inheritdoc/>
    public GeneratedImages Generate(Tensor promptEmbeddings, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(promptEmbeddings);
        options ??= new ImageGenerationOptions();
        CheckEmbeddings(promptEmbeddings, "prompt embeddings");
        long batch = promptEmbeddings.shape[0];
        if (options.Steps <= 0) throw new ArgumentOutOfRangeException(nameof(options), $"Steps must be positive, got {options.Steps}.");
        if (double.IsNaN(options.GuidanceScale)) throw new ArgumentOutOfRangeException(nameof(options), "GuidanceScale is NaN.");
        if (options.Seeds is { } seedList && seedList.Count != batch)
            throw new ArgumentException($"Seeds has {seedList.Count} entries for a batch of {batch} prompt embeddings.", nameof(options));

        using var outer = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        bool guided = options.GuidanceScale > 1.0;

        var context = promptEmbeddings.detach().cpu().to(ScalarType.Float32);
        if (guided)
        {
            Tensor negative;
            if (options.NegativeEmbeddings is { } neg)
            {
                CheckEmbeddings(neg, "negative embeddings");
                if (neg.shape[0] != 1 && neg.shape[0] != batch)
                    throw new ArgumentException($"Negative embeddings have batch {neg.shape[0]}; expected 1 or {batch}.", nameof(options));
                if (neg.shape[1] != promptEmbeddings.shape[1] || neg.shape[2] != promptEmbeddings.shape[2])
                    throw new ArgumentException($"Negative embeddings [{string.Join(",", neg.shape)}] do not match prompt embeddings [{string.Join(",", promptEmbeddings.shape)}] in L×m.", nameof(options));
                negative = neg.detach().cpu().to(ScalarType.Float32);
            }
            else
            {
                negative = EncodeEmptyPrompt(cancellationToken);
                if (negative.shape[1] != promptEmbeddings.shape[1] || negative.shape[2] != promptEmbeddings.shape[2])
                    throw new ArgumentException($"The empty-prompt embedding [{string.Join(",", negative.shape)}] does not match prompt embeddings [{string.Join(",", promptEmbeddings.shape)}] in L×m; pass NegativeEmbeddings.", nameof(promptEmbeddings));
            }
            context = torch.cat(new[] { negative.expand(batch, -1, -1), context }, 0);
        }

        using var scheduler = DiffusionScheduler.Create(GetSchedulerConfig(options.Scheduler));
        var timesteps = scheduler.SetTimesteps(options.Steps);

        var (latents, seeds) = InitialLatents(options, batch);
        if (scheduler.InitNoiseSigma != 1.0) latents = latents * scheduler.InitNoiseSigma;

        var kept = new List<Tensor>();
        using var contextOrt = OrtTensors.ToOrt(context, _contextType, "encoder_hidden_states");
        for (int i = 0; i < timesteps.Length; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var step = torch.NewDisposeScope();
            long t = timesteps[i];
            var input = guided ? torch.cat(new[] { latents, latents }, 0) : latents;
            var noise = RunUnet(input, t, contextOrt, cancellationToken);
            if (guided)
            {
                var parts = noise.chunk(2, 0);
                noise = parts[0] + options.GuidanceScale * (parts[1] - parts[0]);
            }
            var next = scheduler.Step(noise, t, latents);
            latents.Dispose();
            latents = next.MoveToOuterDisposeScope();
            if (options.KeepIntermediateLatents) kept.Add(latents.clone().MoveToOuterDisposeScope());
            progress?.Report(new ImageGenerationProgress(i + 1, timesteps.Length, t));
        }

        cancellationToken.ThrowIfCancellationRequested();
        var images = DecodeLatents(latents, cancellationToken);
        // The result owns its tensors (disposed with it), independent of the caller's dispose scopes.
        var trajectory = options.KeepIntermediateLatents ? torch.stack(kept, 0).DetachFromDisposeScope() : null;
        return new GeneratedImages(images.DetachFromDisposeScope(), trajectory, timesteps, seeds);
    }

    /// <summary>
    /// Decodes latents [B,C,h,w]: the VAE decoder on latents / scaling_factor (one image at a time), then x/2 + 0.5
    /// clamped to [0,1]. Returns float32 images [B,3,H,W].
    /// </summary>
    public Tensor DecodeLatents(Tensor latents, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (latents.dim() != 4 || latents.shape[1] != LatentChannels)
            throw new ArgumentException($"Latents must have shape [B,{LatentChannels},h,w]; got [{string.Join(",", latents.shape)}].", nameof(latents));
        using var scope = torch.NewDisposeScope();
        var scaled = latents.detach().cpu().to(ScalarType.Float32) / VaeScalingFactor;
        var images = new List<Tensor>();
        for (long b = 0; b < scaled.shape[0]; b++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var value = OrtTensors.ToOrt(scaled[TensorIndex.Slice(b, b + 1)], _vaeInType, "latent_sample");
            using var outputs = Run(_vae, new[] { _vaeIn }, new[] { value }, _vaeOut, cancellationToken);
            var x = OrtTensors.ToTorchFloat(outputs[0], $"vae_decoder.{_vaeOut}");
            images.Add((x / 2 + 0.5).clamp(0, 1));
        }
        return torch.cat(images, 0).MoveToOuterDisposeScope();
    }

    private Tensor RunUnet(Tensor sample, long timestep, OrtValue context, CancellationToken ct)
    {
        for (int axis = 0; axis < Math.Min(4, _sampleDims.Length); axis++)
            if (_sampleDims[axis] > 0 && _sampleDims[axis] != sample.shape[axis])
                throw new ArgumentException(axis == 0
                    ? $"unet/model.onnx was exported with a fixed batch of {_sampleDims[0]} latents; this call needs {sample.shape[0]} (2×B with guidance)."
                    : $"unet/model.onnx was exported for latents [{string.Join(",", _sampleDims)}] (images {Known(_sampleDims, 2) * VaeScaleFactor}×{Known(_sampleDims, 3) * VaeScaleFactor} H×W); " +
                      $"the requested latents are [{string.Join(",", sample.shape)}] (images {sample.shape[2] * VaeScaleFactor}×{sample.shape[3] * VaeScaleFactor}).");
        using var sampleOrt = OrtTensors.ToOrt(sample, _sampleType, "sample");
        using var tTensor = _timestepIsScalar ? torch.tensor(timestep) : torch.tensor(new[] { timestep });
        using var timestepOrt = OrtTensors.ToOrt(tTensor, _timestepType, "timestep");
        using var outputs = Run(_unet, new[] { _unetSample, _unetTimestep, _unetContext }, new[] { sampleOrt, timestepOrt, context }, _unetOut, ct);
        var noise = OrtTensors.ToTorchFloat(outputs[0], $"unet.{_unetOut}");
        if (!noise.shape.SequenceEqual(sample.shape))
            throw new InvalidDataException($"unet/model.onnx returned {_unetOut} [{string.Join(",", noise.shape)}] for sample [{string.Join(",", sample.shape)}].");
        return noise;
    }

    private (Tensor Latents, IReadOnlyList<long>? Seeds) InitialLatents(ImageGenerationOptions options, long batch)
    {
        if (options.InitialLatents is { } given)
        {
            if (given.dim() != 4 || given.shape[0] != batch || given.shape[1] != LatentChannels)
                throw new ArgumentException($"InitialLatents must have shape [{batch},{LatentChannels},h,w]; got [{string.Join(",", given.shape)}].", nameof(options));
            return (given.detach().cpu().to(ScalarType.Float32).clone(), null);
        }
        int scale = VaeScaleFactor;
        int height = options.Height ?? DefaultImageSize, width = options.Width ?? DefaultImageSize;
        if (height <= 0 || width <= 0 || height % scale != 0 || width % scale != 0)
            throw new ArgumentException($"Output size {width}×{height} must be positive multiples of the VAE scale {scale}.", nameof(options));
        var shape = new long[] { batch, LatentChannels, height / scale, width / scale };
        if (options.Seeds is { } seeds)
        {
            var parts = new List<Tensor>();
            foreach (var s in seeds)
            {
                using var g = new torch.Generator(unchecked((ulong)s), torch.CPU);
                parts.Add(torch.randn(new long[] { 1, shape[1], shape[2], shape[3] }, ScalarType.Float32, torch.CPU, generator: g));
            }
            return (torch.cat(parts, 0), seeds.ToArray());
        }
        long seed = options.Seed ?? Random.Shared.NextInt64(0, long.MaxValue);
        using var gen = new torch.Generator(unchecked((ulong)seed), torch.CPU);
        return (torch.randn(shape, ScalarType.Float32, torch.CPU, generator: gen), new[] { seed });
    }

    private void CheckEmbeddings(Tensor e, string what)
    {
        if (e.dim() != 3)
            throw new ArgumentException($"The {what} must have shape [B,L,m] = {ConditioningShape}; got [{string.Join(",", e.shape)}].");
        if (!e.is_floating_point())
            throw new ArgumentException($"The {what} must be floating point; got {e.dtype}.");
        if (e.shape[0] < 1
            || (ConditioningShape.SequenceLength > 0 && e.shape[1] != ConditioningShape.SequenceLength)
            || (ConditioningShape.EmbeddingDim > 0 && e.shape[2] != ConditioningShape.EmbeddingDim))
            throw new ArgumentException($"The {what} have shape [{string.Join(",", e.shape)}]; this generator expects {ConditioningShape} (L×m = {ConditioningShape.SequenceLength}×{ConditioningShape.EmbeddingDim}).");
    }

    private long[] EmptyPromptIds()
    {
        if (_options.EmptyPromptInputIds is { } given) return given;
        if (_options.Tokenizer is { } tok) return tok("");
        var tokDir = Path.Combine(Folder, "tokenizer");
        var vocabPath = Path.Combine(tokDir, "vocab.json");
        if (!File.Exists(vocabPath))
            throw new InvalidOperationException(
                $"No negative embeddings were given and the empty prompt cannot be tokenized: {vocabPath} is missing. " +
                "Pass ImageGenerationOptions.NegativeEmbeddings, or set OnnxStableDiffusionOptions.EmptyPromptInputIds or Tokenizer.");
        using var vocabDoc = JsonDocument.Parse(File.ReadAllText(vocabPath));
        var vocab = vocabDoc.RootElement;
        long Id(string token) => vocab.TryGetProperty(token, out var v) ? v.GetInt64()
            : throw new InvalidDataException($"{vocabPath}: token \"{token}\" not found.");
        var bosToken = SpecialToken(tokDir, "bos_token") ?? "<|startoftext|>";
        var eosToken = SpecialToken(tokDir, "eos_token") ?? "<|endoftext|>";
        var padToken = SpecialToken(tokDir, "pad_token") ?? eosToken;
        int length = ConditioningShape.SequenceLength > 0 ? ConditioningShape.SequenceLength
            : PositiveInt(JsonNumber(Path.Combine(tokDir, "tokenizer_config.json"), "model_max_length"))
            ?? throw new InvalidDataException($"The prompt length is unknown: {tokDir}/tokenizer_config.json has no model_max_length.");
        var ids = new long[length];
        ids[0] = Id(bosToken);
        if (length > 1) ids[1] = Id(eosToken);
        long pad = Id(padToken);
        for (int i = 2; i < length; i++) ids[i] = pad;
        return ids;
    }

    private static string? SpecialToken(string tokDir, string key)
    {
        foreach (var file in new[] { "special_tokens_map.json", "tokenizer_config.json" })
        {
            var path = Path.Combine(tokDir, file);
            if (!File.Exists(path)) continue;
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (!doc.RootElement.TryGetProperty(key, out var v)) continue;
            if (v.ValueKind == JsonValueKind.String) return v.GetString();
            if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) return c.GetString();
        }
        return null;
    }

    private int ProbeVaeScale()
    {
        // Decode a small zero latent and compare sizes.
        const int probe = 8;
        using var scope = torch.NewDisposeScope();
        var z = torch.zeros(1, LatentChannels, probe, probe);
        using var value = OrtTensors.ToOrt(z, _vaeInType, "latent_sample");
        using var outputs = Run(_vae, new[] { _vaeIn }, new[] { value }, _vaeOut, CancellationToken.None);
        var shape = outputs[0].GetTensorTypeAndShape().Shape;
        if (shape.Length != 4 || shape[2] % probe != 0)
            throw new InvalidDataException($"vae_decoder/model.onnx returned shape [{string.Join(",", shape)}] for a [1,{LatentChannels},{probe},{probe}] latent.");
        return (int)(shape[2] / probe);
    }

    private static IDisposableReadOnlyCollection<OrtValue> Run(InferenceSession session, string[] names, OrtValue[] values, string output, CancellationToken ct)
    {
        using var runOptions = new RunOptions();
        using var reg = ct.Register(() => runOptions.Terminate = true);
        try
        {
            return session.Run(runOptions, names, values, new[] { output });
        }
        catch (OnnxRuntimeException) when (ct.IsCancellationRequested)
        {
            throw new OperationCanceledException(ct);
        }
    }

    private static SessionOptions CreateSessionOptions(OnnxStableDiffusionOptions options)
    {
        var so = new SessionOptions();
        try
        {
            if (options.IntraOpNumThreads is int n) so.IntraOpNumThreads = n;
            if (options.ExecutionProvider == OnnxExecutionProvider.Cuda)
            {
                try
                {
                    so.AppendExecutionProvider_CUDA(options.CudaDeviceId);
                }
                catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
                {
                    throw new InvalidOperationException(
                        $"The CUDA execution provider is not available (device {options.CudaDeviceId}): {e.Message} " +
                        "Reference the GPU build of ONNX Runtime (Microsoft.ML.OnnxRuntime.Gpu) with CUDA and cuDNN installed, or use OnnxExecutionProvider.Cpu.", e);
                }
            }
            return so;
        }
        catch
        {
            so.Dispose();
            throw;
        }
    }

    private static (string Name, NodeMetadata Meta) Input(InferenceSession session, string path, string preferred)
    {
        var inputs = session.InputMetadata;
        if (inputs.TryGetValue(preferred, out var meta)) return (preferred, meta);
        if (inputs.Count == 1) { var only = inputs.First(); return (only.Key, only.Value); }
        throw new InvalidDataException($"{path}: no input named '{preferred}' (inputs: {string.Join(", ", inputs.Keys)}).");
    }

    private static string Output(InferenceSession session, string preferred) =>
        session.OutputMetadata.ContainsKey(preferred) ? preferred : session.OutputMetadata.Keys.First();

    private static string Require(string folder, params string[] parts)
    {
        var path = Path.Combine(new[] { folder }.Concat(parts).ToArray());
        if (!File.Exists(path))
            throw new FileNotFoundException($"The ONNX Stable Diffusion folder {folder} lacks {string.Join("/", parts)}.", path);
        return path;
    }

    private static int? Known(int[] dims, int axis) => axis < dims.Length && dims[axis] > 0 ? dims[axis] : null;

    private static int? PositiveInt(double? v) => v is double d && d > 0 && d < int.MaxValue ? (int)d : null;

    private static double? JsonNumber(string path, string key)
    {
        if (!File.Exists(path)) return null;
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
    }

    private static int? JsonArrayLength(string path, string key)
    {
        if (!File.Exists(path)) return null;
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array ? v.GetArrayLength() : null;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _textEncoder.Dispose();
        _unet.Dispose();
        _vae.Dispose();
        _emptyPromptEmbedding?.Dispose();
    }
}
