using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.MLNet;

/// <summary>The lazy output of <see cref="GillTransformerBase.Transform"/>.</summary>
internal sealed class GillBatchedDataView : IDataView
{
    private readonly GillTransformerBase _owner;
    private readonly IDataView _input;
    private readonly (int Index, ImageSource Source)[] _columns;

    public GillBatchedDataView(GillTransformerBase owner, IDataView input, (int Index, ImageSource Source)[] columns)
    {
        _owner = owner;
        _input = input;
        _columns = columns;
        Schema = GillSchema.BuildOutputSchema(input.Schema, owner.OutputColumns);
    }

    public bool CanShuffle => _input.CanShuffle;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _input.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        int nIn = _input.Schema.Count;
        var needed = new HashSet<int>(columnsNeeded.Select(c => c.Index));
        foreach (var i in needed)
            if (i < 0 || i >= Schema.Count) throw new ArgumentOutOfRangeException(nameof(columnsNeeded), $"Column index {i} is not in the schema of {_owner.StageName}'s output.");
        var activeOutputs = new bool[_owner.OutputColumns.Count];
        for (int k = 0; k < activeOutputs.Length; k++) activeOutputs[k] = needed.Contains(nIn + k);
        bool anyOutput = activeOutputs.Any(a => a);
        var upstreamNeeded = new HashSet<int>(needed.Where(i => i < nIn));
        if (anyOutput) foreach (var c in _columns) upstreamNeeded.Add(c.Index);
        var upstream = _input.GetRowCursor(_input.Schema.Where(c => upstreamNeeded.Contains(c.Index)), rand);
        return new Cursor(this, upstream, needed, activeOutputs, anyOutput);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        new[] { GetRowCursor(columnsNeeded, rand) };

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly GillBatchedDataView _parent;
        private readonly DataViewRowCursor _upstream;
        private readonly HashSet<int> _active;
        private readonly bool _anyOutput;
        private readonly GillBatch _batch;
        private readonly GillBatch.RowReader? _reader;
        private readonly Dictionary<int, ColumnBuffer> _passThrough = new();
        private readonly DataViewRowId[] _ids;
        private readonly ValueGetter<DataViewRowId> _upstreamId;
        private readonly int _nIn;
        private int _filled;
        private int _slot = -1;
        private long _position = -1;
        private bool _done;

        public Cursor(GillBatchedDataView parent, DataViewRowCursor upstream, HashSet<int> active, bool[] activeOutputs, bool anyOutput)
        {
            _parent = parent;
            _upstream = upstream;
            _active = active;
            _anyOutput = anyOutput;
            _nIn = parent._input.Schema.Count;
            var owner = parent._owner;
            int capacity = owner.BatchSize;
            _batch = new GillBatch(owner.StageName, owner.InputColumns, parent._columns.Select(c => c.Source).ToArray(), owner.OutputColumns, activeOutputs, capacity, owner.ImageFolder);
            if (anyOutput) _reader = new GillBatch.RowReader(upstream, owner.InputColumns, parent._columns);
            foreach (var i in active.Where(i => i < _nIn))
                _passThrough[i] = ColumnBuffer.Create(upstream, upstream.Schema[i], capacity);
            _ids = new DataViewRowId[capacity];
            _upstreamId = upstream.GetIdGetter();
        }

        public override DataViewSchema Schema => _parent.Schema;

        public override long Position => _position;

        public override long Batch => 0;

        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (_done) return false;
            if (_slot + 1 < _filled)
            {
                _slot++;
                _position++;
                return true;
            }
            _batch.Reset();
            _filled = 0;
            int capacity = _ids.Length;
            while (_filled < capacity && _upstream.MoveNext())
            {
                foreach (var b in _passThrough.Values) b.Read(_filled);
                _upstreamId(ref _ids[_filled]);
                if (_anyOutput) _batch.AddRow(_upstream.Position, _reader!);
                _filled++;
            }
            if (_filled == 0)
            {
                _done = true;
                _slot = -1;
                return false;
            }
            if (_anyOutput) _parent._owner.RunBatch(_batch);
            _slot = 0;
            _position++;
            return true;
        }

        private int CurrentSlot()
        {
            if (_slot < 0 || _done) throw new InvalidOperationException($"{_parent._owner.StageName}: the cursor is not on a row (call MoveNext first).");
            return _slot;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = _ids[CurrentSlot()];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active.Contains(column.Index))
                throw new InvalidOperationException($"{_parent._owner.StageName}: column '{column.Name}' was not requested when the cursor was created.");
            if (column.Index < _nIn) return _passThrough[column.Index].GetGetter<TValue>(CurrentSlot, column.Name);
            return OutputGetters.Make<TValue>(_batch, _parent._owner.OutputColumns, column.Index - _nIn, CurrentSlot, static () => { });
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _batch.Dispose();
                _upstream.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}

/// <summary>Getters of a stage's output columns, reading a filled <see cref="GillBatch"/>.</summary>
internal static class OutputGetters
{
    public static ValueGetter<TValue> Make<TValue>(GillBatch batch, IReadOnlyList<GillColumn> outputs, int k, Func<int> row, Action ensure)
    {
        var c = outputs[k];
        Delegate d = c.Kind switch
        {
            GillColumnKind.FloatVector => (ValueGetter<VBuffer<float>>)((ref VBuffer<float> dst) => { ensure(); batch.CopyVector(k, row(), ref dst); }),
            GillColumnKind.Float => (ValueGetter<float>)((ref float dst) => { ensure(); dst = batch.GetFloat(k, row()); }),
            GillColumnKind.Boolean => (ValueGetter<bool>)((ref bool dst) => { ensure(); dst = batch.GetBoolean(k, row()); }),
            GillColumnKind.Key => (ValueGetter<uint>)((ref uint dst) => { ensure(); dst = batch.GetKey(k, row()); }),
            GillColumnKind.Text => (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> dst) => { ensure(); dst = batch.GetText(k, row()).AsMemory(); }),
            _ => throw new InvalidOperationException($"Column '{c.Name}' of kind {c.Kind} cannot be an output column."),
        };
        return d as ValueGetter<TValue> ?? throw new InvalidOperationException(
            $"{batch.Stage}: column '{c.Name}' holds {c.Describe()}; a getter of {typeof(TValue).Name} was requested.");
    }
}

/// <summary>Holds the values of one pass-through column for the rows of the current batch.</summary>
internal abstract class ColumnBuffer
{
    public abstract void Read(int slot);

    public abstract ValueGetter<TValue> GetGetter<TValue>(Func<int> slot, string name);

    public static ColumnBuffer Create(DataViewRow row, DataViewSchema.Column column, int capacity)
    {
        var type = column.Type is VectorDataViewType v
            ? typeof(VectorColumnBuffer<>).MakeGenericType(v.ItemType.RawType)
            : typeof(ScalarColumnBuffer<>).MakeGenericType(column.Type.RawType);
        return (ColumnBuffer)Activator.CreateInstance(type, row, column, capacity)!;
    }
}

/// <summary>A pass-through scalar (or reference) column.</summary>
internal sealed class ScalarColumnBuffer<T> : ColumnBuffer
{
    private readonly ValueGetter<T> _src;
    private readonly T[] _values;

    public ScalarColumnBuffer(DataViewRow row, DataViewSchema.Column column, int capacity)
    {
        _src = row.GetGetter<T>(column);
        _values = new T[capacity];
    }

    // A fresh variable per row: an upstream getter that disposes or reuses its previous value never touches a buffered one.
    public override void Read(int slot)
    {
        T value = default!;
        _src(ref value);
        _values[slot] = value;
    }

    public override ValueGetter<TValue> GetGetter<TValue>(Func<int> slot, string name)
    {
        ValueGetter<T> g = (ref T dst) => dst = _values[slot()];
        return g as ValueGetter<TValue> ?? throw new InvalidOperationException($"Column '{name}' holds {typeof(T).Name}; a getter of {typeof(TValue).Name} was requested.");
    }
}

/// <summary>A pass-through vector column (values copied in and out so no buffer is shared with a consumer).</summary>
internal sealed class VectorColumnBuffer<T> : ColumnBuffer
{
    private readonly ValueGetter<VBuffer<T>> _src;
    private readonly VBuffer<T>[] _values;

    public VectorColumnBuffer(DataViewRow row, DataViewSchema.Column column, int capacity)
    {
        _src = row.GetGetter<VBuffer<T>>(column);
        _values = new VBuffer<T>[capacity];
    }

    public override void Read(int slot)
    {
        VBuffer<T> value = default;
        _src(ref value);
        value.CopyTo(ref _values[slot]);
    }

    public override ValueGetter<TValue> GetGetter<TValue>(Func<int> slot, string name)
    {
        ValueGetter<VBuffer<T>> g = (ref VBuffer<T> dst) => _values[slot()].CopyTo(ref dst);
        return g as ValueGetter<TValue> ?? throw new InvalidOperationException($"Column '{name}' holds VBuffer<{typeof(T).Name}>; a getter of {typeof(TValue).Name} was requested.");
    }
}
