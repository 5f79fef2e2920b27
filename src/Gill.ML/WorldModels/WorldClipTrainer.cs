using Gill.ML.Modules.Clip;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.WorldModels;

/// <summary>Options for the world's contrastive image–text pretraining.</summary>
public sealed class WorldClipTrainingOptions
{
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; set; } = 600;

    /// <summary>Pairs per step (every other pair in the batch is a negative).</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>Peak learning rate (AdamW), linear warm-up then cosine decay to 5%.</summary>
    public double LearningRate { get; set; } = 1e-3;

    /// <summary>Warm-up steps.</summary>
    public int WarmupSteps { get; set; } = 30;

    /// <summary>Decoupled weight decay.</summary>
    public double WeightDecay { get; set; } = 0.01;

    /// <summary>Seed of batch sampling.</summary>
    public int Seed { get; set; } = 1;

    /// <summary>Reports (step, total steps, loss).</summary>
    public IProgress<(int Step, int TotalSteps, double Loss)>? Progress { get; set; }

    /// <summary>Stops at the next step boundary.</summary>
    public CancellationToken CancellationToken { get; set; }

    internal void Validate()
    {
        if (Steps <= 0) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Steps must be positive.");
        if (BatchSize < 2) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 2 (contrastive negatives).");
        if (LearningRate <= 0) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be positive.");
    }
}

/// <summary>CLIP-style contrastive training of the world image tower with a Hugging Face CLIP text tower.</summary>
internal static class WorldClipTrainer
{
    /// <summary>
    /// Trains both towers and the logit scale in place on pairs (<paramref name="images"/> [N, 3, S, S] in [0, 1],
    /// <paramref name="inputIds"/> [N, L] padded CLIP token ids). Returns the per-step losses and the learned logit scale.
    /// </summary>
    public static (List<double> Losses, float LogitScale) Train(WorldImageEncoder image, ClipTextEncoder text, Tensor images, Tensor inputIds, WorldClipTrainingOptions options)
    {
        options.Validate();
        if (!text.HasProjection) throw new ArgumentException("The text tower needs a projection (CLIPTextModelWithProjection).", nameof(text));
        long n = images.shape[0];
        if (inputIds.shape[0] != n) throw new ArgumentException($"{n} images but {inputIds.shape[0]} token rows.", nameof(inputIds));
        if (text.EmbeddingSize != image.Config.ProjectionDim)
            throw new ArgumentException($"Text projection size {text.EmbeddingSize} differs from the image projection size {image.Config.ProjectionDim}.", nameof(text));
        var device = text.Device;
        image.to(device);
        image.train();
        foreach (var p in image.parameters()) p.requires_grad = true;
        text.SetTrainable(true);
        var logitScale = torch.nn.Parameter(torch.tensor(MathF.Log(1 / 0.07f), device: device));
        var parameters = image.parameters().Concat(text.Parameters()).Append(logitScale).ToList();
        using var optimizer = torch.optim.AdamW(parameters, options.LearningRate, beta1: 0.9, beta2: 0.98, weight_decay: options.WeightDecay);
        var gen = new torch.Generator((ulong)options.Seed);
        var losses = new List<double>(options.Steps);
        int batch = (int)Math.Min(options.BatchSize, n);
        for (int step = 0; step < options.Steps; step++)
        {
            options.CancellationToken.ThrowIfCancellationRequested();
            double lr = step < options.WarmupSteps
                ? options.LearningRate * (step + 1) / options.WarmupSteps
                : options.LearningRate * (0.05 + 0.95 * 0.5 * (1 + Math.Cos(Math.PI * (step - options.WarmupSteps) / Math.Max(1, options.Steps - options.WarmupSteps))));
            foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
            using var scope = torch.NewDisposeScope();
            var idx = torch.randperm(n, generator: gen).narrow(0, 0, batch).to(device);
            var (_, imgEmb) = image.forward(images.index_select(0, idx.cpu()).to(device));
            using var textOut = text.Forward(inputIds.index_select(0, idx.cpu()).to(device));
            var v = torch.nn.functional.normalize(imgEmb, dim: -1);
            var t = torch.nn.functional.normalize(textOut.TextEmbeddings!, dim: -1);
            var logits = logitScale.clamp_max(MathF.Log(100)).exp() * t.matmul(v.t());
            var labels = torch.arange(batch, device: device);
            var loss = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.t(), labels));
            optimizer.zero_grad();
            loss.backward();
            torch.nn.utils.clip_grad_norm_(parameters, 1.0);
            optimizer.step();
            double value = loss.item<float>();
            losses.Add(value);
            if (options.Progress is not null && (step % 10 == 0 || step == options.Steps - 1))
                options.Progress.Report((step + 1, options.Steps, value));
        }
        image.eval();
        foreach (var p in image.parameters()) p.requires_grad = false;
        text.SetTrainable(false);
        float scale = logitScale.detach().item<float>();
        logitScale.Dispose();
        return (losses, scale);
    }

    /// <summary>Image embeddings (normalised) for a set of images, in batches, without gradients.</summary>
    public static Tensor EmbedImages(WorldImageEncoder image, Tensor images, bool pooled = false, int batchSize = 256)
    {
        using var noGrad = torch.no_grad();
        var device = image.parameters().First().device;
        var parts = new List<Tensor>();
        for (long i = 0; i < images.shape[0]; i += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            var (p, e) = image.forward(images.narrow(0, i, Math.Min(batchSize, images.shape[0] - i)).to(device));
            var r = pooled ? p : torch.nn.functional.normalize(e, dim: -1);
            parts.Add(r.cpu().MoveToOuterDisposeScope());
        }
        var result = torch.cat(parts, 0);
        foreach (var t in parts) t.Dispose();
        return result;
    }

    /// <summary>Text embeddings (normalised) for token rows, in batches, without gradients.</summary>
    public static Tensor EmbedTexts(ClipTextEncoder text, Tensor inputIds, int batchSize = 256)
    {
        using var noGrad = torch.no_grad();
        var parts = new List<Tensor>();
        for (long i = 0; i < inputIds.shape[0]; i += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            using var o = text.Forward(inputIds.narrow(0, i, Math.Min(batchSize, inputIds.shape[0] - i)).to(text.Device));
            parts.Add(torch.nn.functional.normalize(o.TextEmbeddings!, dim: -1).cpu().MoveToOuterDisposeScope());
        }
        var result = torch.cat(parts, 0);
        foreach (var t in parts) t.Dispose();
        return result;
    }

    /// <summary>
    /// Recall@1 of text→image and image→text over paired rows. A hit is the paired item or, when
    /// <paramref name="groups"/> is given, any item of the same group (e.g. identical attributes).
    /// </summary>
    public static (double TextToImage, double ImageToText) RecallAt1(Tensor textEmb, Tensor imageEmb, int[]? groups = null)
    {
        using var scope = torch.NewDisposeScope();
        var sim = textEmb.matmul(imageEmb.t());
        var t2i = sim.argmax(1).data<long>().ToArray();
        var i2t = sim.argmax(0).data<long>().ToArray();
        int n = t2i.Length, hitsT = 0, hitsI = 0;
        for (int i = 0; i < n; i++)
        {
            if (t2i[i] == i || (groups is not null && groups[t2i[i]] == groups[i])) hitsT++;
            if (i2t[i] == i || (groups is not null && groups[i2t[i]] == groups[i])) hitsI++;
        }
        return ((double)hitsT / n, (double)hitsI / n);
    }
}
