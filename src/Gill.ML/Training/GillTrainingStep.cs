using Gill.ML.Modules;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Training;

/// <summary>Tensors of one forward computation of GILL's joint objective (they keep the autograd graph).</summary>
public sealed class GillForwardResult
{
    /// <summary>Weighted total loss.</summary>
    public required Tensor Total { get; init; }

    /// <summary>Captioning cross-entropy (l_c).</summary>
    public required Tensor Captioning { get; init; }

    /// <summary>Text-only cross-entropy of the retrieval pass (l_p, first copy).</summary>
    public required Tensor RetrievalText { get; init; }

    /// <summary>Text-only cross-entropy of the generation pass (l_p, second copy).</summary>
    public required Tensor GenerationText { get; init; }

    /// <summary>InfoNCE (l_r).</summary>
    public required Tensor Contrastive { get; init; }

    /// <summary>Generation distillation loss (l_g).</summary>
    public required Tensor Generation { get; init; }

    /// <summary>[IMG] hidden states of the generation pass [B, r, D] (float32).</summary>
    public required Tensor ImgHiddenStates { get; init; }

    /// <summary>Normalised text retrieval embeddings [B, p].</summary>
    public required Tensor RetrievalTextEmbedding { get; init; }

    /// <summary>exp(logit_scale)·normalised image retrieval embeddings [B, p].</summary>
    public required Tensor RetrievalImageEmbedding { get; init; }

    /// <summary>Mapper output [B, L, out].</summary>
    public required Tensor GenerationOutput { get; init; }

    /// <summary>Copies the loss terms to managed numbers.</summary>
    public GillLossValues ToValues() => new(
        Total.item<float>(), Captioning.item<float>(), RetrievalText.item<float>(), GenerationText.item<float>(),
        Contrastive.item<float>(), Generation.item<float>());
}

/// <summary>
/// GILL's joint training step (spec §2–§3): three LM passes (captioning with the visual prefix; the text-only retrieval
/// and generation passes), InfoNCE between the [IMG0] text embedding and the visual feature, the generation mapper
/// against the Stable Diffusion targets; AdamW (0.9, 0.95, 1e-8, wd 0.01) over the trainable tensors only, warm-up then
/// StepLR, global-norm clipping, gradient accumulation, and E_img re-normalisation after every optimizer step.
/// Every micro-batch runs inside its own dispose scope.
/// </summary>
public sealed class GillTrainingStep : IDisposable
{
    private readonly Parameter[] _parameters;
    private readonly Parameter[] _lmParameters = Array.Empty<Parameter>();
    private readonly SplitMix64 _coins;
    private bool _disposed;

    /// <summary>
    /// Creates the optimizer over <paramref name="model"/>'s trainable heads, plus the language model's parameters (their
    /// own learning rate, no weight decay) when <see cref="GillTrainingOptions.TrainLanguageModel"/> is set.
    /// </summary>
    /// <exception cref="NotSupportedException">TrainLanguageModel is set but the language model is not a TorchSharp module.</exception>
    public GillTrainingStep(GillCoreModel model, GillTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Model = model;
        Options = options.Clone();
        var heads = model.Heads.parameters().ToArray();
        if (Options.TrainLanguageModel)
        {
            var lm = model.LanguageModel as nn.Module
                ?? throw new NotSupportedException($"TrainLanguageModel needs a TorchSharp language model; {model.LanguageModel.GetType().Name} is not an nn.Module.");
            model.LanguageModel.SetTrainable(true);
            lm.eval();
            _lmParameters = lm.parameters().Where(p => p.requires_grad).ToArray();
            _parameters = heads.Concat(_lmParameters).ToArray();
            Optimizer = torch.optim.AdamW(new[]
            {
                new AdamW.ParamGroup(heads, Options.LearningRate, Options.Beta1, Options.Beta2, Options.Epsilon, Options.WeightDecay),
                new AdamW.ParamGroup(_lmParameters, Options.LanguageModelLearningRate, Options.Beta1, Options.Beta2, Options.Epsilon, 0.0),
            }, Options.LearningRate, Options.Beta1, Options.Beta2, Options.Epsilon, Options.WeightDecay);
        }
        else
        {
            _parameters = heads;
            Optimizer = torch.optim.AdamW(_parameters, Options.LearningRate, Options.Beta1, Options.Beta2, Options.Epsilon, Options.WeightDecay);
        }
        _coins = new SplitMix64(unchecked((ulong)Options.Seed * 0x9E3779B97F4A7C15UL + 1));
    }

    /// <summary>The model being trained.</summary>
    public GillCoreModel Model { get; }

    /// <summary>The options snapshot.</summary>
    public GillTrainingOptions Options { get; }

    /// <summary>Optimizer steps taken so far (the scheduler position).</summary>
    public long StepsTaken { get; internal set; }

    internal AdamW Optimizer { get; }

    internal ulong CoinState { get => _coins.State; set => _coins.State = value; }

    /// <summary>Learning rate the next optimizer step will use.</summary>
    public double NextLearningRate => Options.LearningRateAt(StepsTaken);

    /// <summary>Draws this step's concatenation decisions (captioning, retrieval, generation, in that order).</summary>
    public GillConcatenation DrawConcatenation()
    {
        double p = Options.ConcatenationProbability;
        bool c = _coins.NextDouble() < p, r = _coins.NextDouble() < p, g = _coins.NextDouble() < p;
        return new GillConcatenation(c, r, g);
    }

    /// <summary>
    /// Computes every loss term for one batch without touching gradients or weights. Call inside a dispose scope;
    /// <paramref name="concatenation"/> defaults to none.
    /// </summary>
    public GillForwardResult Forward(GillBatch batch, GillConcatenation concatenation = default)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var o = Options;
        var config = Model.Config;
        bool needTargets = o.GenerationLossWeight > 0;
        batch.Validate(config, needTargets);
        var device = Model.Device;
        int b = batch.Count;
        int k = config.NVisualTokens, r = config.NumTokens;
        var imgIds = Model.ImgTokenIds;
        bool canPair = b % 2 == 0;

        var tokensCpu = batch.TokenIds.to(ScalarType.Int64).cpu();
        var tokens = ToArray2D(tokensCpu);
        long t = tokens.GetLength(1);
        var capLen = batch.CaptionLengths.to(ScalarType.Int64).cpu().data<long>().ToArray();
        var ids = tokensCpu.to(device);
        var last = torch.tensor(capLen.Select(c => c - 1).ToArray(), device: device);
        Model.CheckImgGroups(ids, last);

        var feats = batch.VisualFeatures.to(ScalarType.Float32).to(device);
        var tokenEmbeds = Model.EmbedTokens(ids);
        var lmType = tokenEmbeds.dtype;

        // Captioning: [k visual tokens][BOS caption [IMG]... pad...].
        var visual = Model.VisualTokens(feats).to(lmType);
        var capEmbeds = torch.cat(new[] { visual, tokenEmbeds }, 1);
        var (capLabelsArr, capPad) = GillSequences.CaptioningLabels(tokens, k, Model.PadTokenId, imgIds);
        var capLabels = torch.tensor(Flatten(capLabelsArr), new long[] { b, k + t }, device: device);
        if (concatenation.Captioning && canPair)
        {
            var index = torch.tensor(GillSequences.ConcatenationGatherIndex(capPad, (int)(k + t), k), device: device);
            capEmbeds = capEmbeds.reshape(b * (k + t), -1).index_select(0, index).reshape(b / 2, 2 * (k + t) - 1, -1);
            capLabels = capLabels.reshape(-1).index_select(0, index).reshape(b / 2, 2 * (k + t) - 1);
        }
        var capHidden = Model.LastHiddenState(capEmbeds);
        var ceCap = GillLosses.CausalLMCrossEntropy(Model.Logits, capHidden, capLabels);

        // Text-only passes: [BOS caption [IMG0..r-1] pad...]; one LM pass serves both when their layouts agree.
        bool concatRet = concatenation.Retrieval && canPair, concatGen = concatenation.Generation && canPair;
        var retPass = TextPass(tokens, tokenEmbeds, capLen, concatRet);
        var genPass = concatGen == concatRet ? retPass : TextPass(tokens, tokenEmbeds, capLen, concatGen);

        // Retrieval: InfoNCE between normalize(W_t2i h[IMG0]) and exp(logit_scale)·normalize(W_i2t feature).
        var textEmb = Model.TextRetrievalEmbedding(retPass.ImgHidden);
        var imageEmb = Model.ImageRetrievalEmbedding(feats);
        var (nce, _, _) = GillLosses.InfoNce(textEmb, imageEmb, Model.Heads.LogitScale, o.ContrastiveReduction);

        // Generation: f_ω(h[IMG] + E_img) against the targets.
        var genOut = Model.GenerationEmbedding(genPass.ImgHidden);
        var genLoss = needTargets
            ? GillLosses.Generation(genOut, batch.GenerationTargets!.to(device), o.GenerationLoss)
            : torch.zeros(Array.Empty<long>(), ScalarType.Float32, device);

        var total = ceCap * o.CaptioningLossWeight + retPass.Ce * o.RetrievalTextLossWeight + genPass.Ce * o.GenerationTextLossWeight
                    + nce * o.ContrastiveLossWeight + genLoss * o.GenerationLossWeight;
        return new GillForwardResult
        {
            Total = total,
            Captioning = ceCap,
            RetrievalText = retPass.Ce,
            GenerationText = genPass.Ce,
            Contrastive = nce,
            Generation = genLoss,
            ImgHiddenStates = genPass.ImgHidden,
            RetrievalTextEmbedding = textEmb,
            RetrievalImageEmbedding = imageEmb * Model.Heads.LogitScale.exp(),
            GenerationOutput = genOut,
        };
    }

    private (Tensor Ce, Tensor ImgHidden) TextPass(long[,] tokens, Tensor tokenEmbeds, long[] capLen, bool concat)
    {
        var device = Model.Device;
        int b = tokens.GetLength(0), t = tokens.GetLength(1);
        var (labelsArr, pad) = GillSequences.TextLabels(tokens, Model.PadTokenId);
        var embeds = tokenEmbeds;
        var lastPos = capLen.Select(c => c - 1).ToArray();
        long[] rows = Enumerable.Range(0, b).Select(i => (long)i).ToArray();
        if (concat)
        {
            var index = GillSequences.ConcatenationGatherIndex(pad, t, 0);
            int len = 2 * t - 1;
            var flat = Flatten(labelsArr);
            var newLabels = new long[b / 2, len];
            for (int i = 0; i < index.Length; i++) newLabels[i / len, i % len] = flat[index[i]];
            labelsArr = newLabels;
            embeds = tokenEmbeds.reshape(b * t, -1).index_select(0, torch.tensor(index, device: device)).reshape(b / 2, len, -1);
            var flatTokens = Flatten(tokens);
            var imgIds = Model.ImgTokenIds;
            for (int i = 0; i < b; i += 2)
            {
                rows[i] = rows[i + 1] = i / 2;
                // The second example lost its BOS and follows the first one's unpadded part.
                lastPos[i + 1] = pad[i] + lastPos[i + 1] - 1;
                for (int e = i; e <= i + 1; e++)
                    for (int j = 0; j < imgIds.Count; j++)
                    {
                        long p = (i / 2) * (long)len + lastPos[e] - (imgIds.Count - 1) + j;
                        if (p < 0 || p >= index.Length || flatTokens[index[p]] != imgIds[j])
                            throw new InvalidOperationException($"Concatenation misplaced the [IMG] group of example {e}.");
                    }
            }
        }
        GillSequences.MaskNonFirstImgTokens(labelsArr, Model.PadTokenId, Model.ImgTokenIds);
        var labels = torch.tensor(Flatten(labelsArr), new long[] { labelsArr.GetLength(0), labelsArr.GetLength(1) }, device: device);
        var hidden = Model.LastHiddenState(embeds);
        var ce = GillLosses.CausalLMCrossEntropy(Model.Logits, hidden, labels);
        var perExample = hidden.index_select(0, torch.tensor(rows, device: device));
        var imgHidden = Model.GatherImgStates(perExample, torch.tensor(lastPos, device: device));
        return (ce, imgHidden);
    }

    /// <summary>One optimizer step over one batch (no accumulation).</summary>
    public GillStepResult Step(GillBatch batch) => Step(new[] { batch });

    /// <summary>
    /// One optimizer step over micro-batches: each runs forward/backward in its own dispose scope with loss/n, then the
    /// learning rate is set, gradients are clipped, AdamW steps, E_img rows are re-normalised and gradients cleared.
    /// Concatenation decisions are drawn per micro-batch from the step's seeded generator.
    /// </summary>
    public GillStepResult Step(IReadOnlyList<GillBatch> microBatches)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(microBatches);
        if (microBatches.Count == 0) throw new ArgumentException("An optimizer step needs at least one micro-batch.", nameof(microBatches));
        int n = microBatches.Count;
        double[] sums = new double[6];
        int examples = 0;
        Model.Heads.train();
        ZeroGradients();
        foreach (var batch in microBatches)
        {
            using var scope = torch.NewDisposeScope();
            var result = Forward(batch, DrawConcatenation());
            (result.Total / n).backward();
            var v = result.ToValues();
            sums[0] += v.Total; sums[1] += v.Captioning; sums[2] += v.RetrievalText;
            sums[3] += v.GenerationText; sums[4] += v.Contrastive; sums[5] += v.Generation;
            examples += batch.Count;
        }
        double lr = NextLearningRate;
        double gradNorm;
        using (var scope = torch.NewDisposeScope())
        {
            var groups = Optimizer.ParamGroups.ToArray();
            groups[0].LearningRate = lr;
            // The LM group follows the same schedule, scaled to its own peak rate.
            for (int i = 1; i < groups.Length; i++) groups[i].LearningRate = lr * Options.LanguageModelLearningRate / Options.LearningRate;
            gradNorm = Options.GradClip > 0
                ? torch.nn.utils.clip_grad_norm_(_parameters, Options.GradClip)
                : GlobalGradNorm();
            Optimizer.step();
            Model.RenormalizeImgTokenEmbeddings();
        }
        ZeroGradients();
        StepsTaken++;
        var losses = new GillLossValues(sums[0] / n, sums[1] / n, sums[2] / n, sums[3] / n, sums[4] / n, sums[5] / n);
        return new GillStepResult(StepsTaken, losses, lr, gradNorm, examples);
    }

    private void ZeroGradients()
    {
        Model.Heads.zero_grad();
        if (_lmParameters.Length > 0) ((nn.Module)Model.LanguageModel).zero_grad();
    }

    private double GlobalGradNorm()
    {
        double sq = 0;
        foreach (var p in _parameters)
        {
            using var g = p.grad;
            if (g is null) continue;
            sq += g.to(ScalarType.Float64).pow(2).sum().item<double>();
        }
        return Math.Sqrt(sq);
    }

    private static long[,] ToArray2D(Tensor t2)
    {
        int rows = (int)t2.shape[0], cols = (int)t2.shape[1];
        var flat = t2.contiguous().data<long>().ToArray();
        var result = new long[rows, cols];
        Buffer.BlockCopy(flat, 0, result, 0, flat.Length * sizeof(long));
        return result;
    }

    private static long[] Flatten(long[,] a)
    {
        var flat = new long[a.Length];
        Buffer.BlockCopy(a, 0, flat, 0, a.Length * sizeof(long));
        return flat;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Optimizer.Dispose();
        if (_lmParameters.Length > 0)
        {
            // The fine-tuned weights stay; gradients are switched off again, as GillCoreModel leaves the LM.
            ((nn.Module)Model.LanguageModel).zero_grad();
            Model.LanguageModel.SetTrainable(false);
        }
    }
}
